"""The safe reload of one module (handler/reload.py, issue 19): an in-process node, modules
edited on disk and reloaded from the code path.

A GenServer switches at its next callback, same pid, same state; one whose new code has a
code_change is suspended, migrated and resumed; a syntax error, new code raising at its
top level, or a code_change that would raise change nothing; a code_change that fails only
for real rolls back in place; a raw process left in old code is listed, then killed by the
next load.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from relhandler.errors import InstallError, ModuleLoadError
from relhandler.handler.reload import ReloadReport, reload_module
from relhandler.runtime import Node, Pid, gen_server, gen_statem, supervisor

from .conftest import CodeDir, until

SERVER = """
from relhandler.runtime import gen_server

def init(args):
    return ("ok", {{"n": 0}})

def handle_call(req, from_, state):
    state = {{**state, "n": state["n"] + 1}}
    return ("reply", ({tag!r}, state), state)

def handle_cast(msg, state):
    return ("noreply", state)
{extra}
"""

# v2's state is a dict with a "seen" list; its code_change builds it from v1's
MIGRATE = """
def code_change(old_vsn, state, extra):
    {body}
    return ("ok", {{**state, "seen": ["migrated from " + str(old_vsn)[:7]]}})
"""

LOOPER = """
async def loop():
    await receive()
    return loop()

from relhandler.runtime import receive
VSN = {vsn!r}
"""


@pytest.fixture
async def node(code_dir: CodeDir) -> AsyncIterator[Node]:
    async with Node() as n:
        n.code.set_path([code_dir.root])
        yield n


async def _server(node: Node, code_dir: CodeDir) -> tuple[str, Pid]:
    mod = code_dir.name("srv")
    code_dir.write("srv", SERVER.format(tag="v1", extra=""))
    pid = await gen_server.start(mod, None)
    assert await gen_server.call(pid, "x") == ("v1", {"n": 1})
    return mod, pid


async def test_a_gen_server_switches_at_its_next_callback_same_pid_same_state(
    node: Node, code_dir: CodeDir
) -> None:
    mod, pid = await _server(node, code_dir)
    v1 = node.code.vsn(mod)
    code_dir.write("srv", SERVER.format(tag="v2", extra=""))
    r = await reload_module(node, mod)
    assert isinstance(r, ReloadReport)
    assert (r.module, r.change, r.old_vsn, r.switched, r.migrated, r.killed, r.old_code) == (
        mod,
        "load",
        v1,
        (pid,),
        (),
        (),
        (),
    )
    assert r.vsn == node.code.vsn(mod) != v1 and r.vsn.startswith("sha256:")
    assert r.file == str(code_dir.root / f"{mod}.py") and r.elapsed_ms > 0
    assert await gen_server.call(pid, "x") == ("v2", {"n": 2})
    assert r.line().startswith(f"reloaded {mod} {r.vsn}, switched 1 ({pid}), ")


async def test_a_code_change_migrates_the_state_of_the_same_pid(
    node: Node, code_dir: CodeDir
) -> None:
    mod, pid = await _server(node, code_dir)
    v1 = node.code.vsn(mod)
    code_dir.write("srv", SERVER.format(tag="v2", extra=MIGRATE.format(body="pass")))
    r = await reload_module(node, mod)
    assert (r.change, r.migrated, r.switched) == ("advanced", (pid,), ())
    assert await gen_server.call(pid, "x") == (
        "v2",
        {"n": 2, "seen": [f"migrated from {str(v1)[:7]}"]},
    )
    # saving back to the earlier content is a reload like any other (no code_change: v1's
    # code keeps the migrated state, which it does not look at)
    code_dir.write("srv", SERVER.format(tag="v1", extra=""))
    r = await reload_module(node, mod)
    assert (r.change, r.vsn, r.switched) == ("load", v1, (pid,))
    assert (await gen_server.call(pid, "x"))[0] == "v1"


@pytest.mark.parametrize(
    ("source", "error", "where"),
    [
        pytest.param("def handle_call(:\n", ModuleLoadError, ":1: syntax error", id="syntax"),
        pytest.param(
            SERVER.format(tag="v2", extra="\nundefined_name\n"),
            ModuleLoadError,
            ":14: module",
            id="raises-at-top-level",
        ),
        pytest.param(
            SERVER.format(tag="v2", extra=MIGRATE.format(body="raise KeyError('shape')")),
            InstallError,
            r"preflight: .*code_change would fail in 1 process\(es\) .*KeyError: 'shape'",
            id="code-change-would-raise",
        ),
    ],
)
async def test_bad_new_code_changes_nothing(
    node: Node, code_dir: CodeDir, source: str, error: type[Exception], where: str
) -> None:
    mod, pid = await _server(node, code_dir)
    before = node.code.which(mod)
    path = code_dir.root / f"{mod}.py"
    path.write_text(source)
    with pytest.raises(error, match=where) as info:
        await reload_module(node, mod)
    if error is ModuleLoadError:
        assert str(path) in str(info.value)
    assert node.code.which(mod) == before
    assert await gen_server.call(pid, "x") == ("v1", {"n": 2})


async def test_a_code_change_failing_for_real_rolls_back_in_place(
    node: Node, code_dir: CodeDir
) -> None:
    mod, pid = await _server(node, code_dir)
    before = node.code.which(mod)
    # the preflight runs code_change in a worker thread, the real one on the loop
    body = (
        "import threading\n"
        "    if threading.current_thread() is threading.main_thread():\n"
        "        raise RuntimeError('only for real')"
    )
    code_dir.write("srv", SERVER.format(tag="v2", extra=MIGRATE.format(body=body)))
    with pytest.raises(InstallError, match="only for real; rolled back in place") as info:
        await reload_module(node, mod)
    assert info.value.code == "install_failed"
    assert node.code.which(mod) == before
    assert await gen_server.call(pid, "x") == ("v1", {"n": 2})  # resumed, state as before


async def test_a_raw_process_in_old_code_is_listed_then_killed_by_the_next_load(
    node: Node, code_dir: CodeDir
) -> None:
    mod = code_dir.name("loop")
    code_dir.write("loop", LOOPER.format(vsn=1))
    pid = node.spawn(node.code.current(mod).loop)
    await asyncio.sleep(0)
    code_dir.write("loop", LOOPER.format(vsn=2))
    r = await reload_module(node, mod)
    assert (r.old_code, r.killed, r.switched) == ((pid,), (), ())
    assert "still in old code: " + str(pid) in r.line()
    code_dir.write("loop", LOOPER.format(vsn=3))
    r = await reload_module(node, mod)
    assert (r.killed, r.old_code) == ((pid,), ())
    await until(lambda: pid not in node.processes)
    assert node.code.current(mod).VSN == 3


async def test_reloads_wait_for_the_lock(node: Node, code_dir: CodeDir) -> None:
    mod, pid = await _server(node, code_dir)
    lock = asyncio.Lock()
    await lock.acquire()  # an install under way
    code_dir.write("srv", SERVER.format(tag="v2", extra=""))
    task = asyncio.ensure_future(reload_module(node, mod, lock=lock))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done() and (await gen_server.call(pid, "x"))[0] == "v1"
    lock.release()
    await task
    assert (await gen_server.call(pid, "x"))[0] == "v2"


STATEM = """
from relhandler.runtime import gen_statem

def callback_mode():
    return "handle_event_function"

def init(args):
    return ("ok", "locked", {{"tries": 0}})

def handle_event(etype, content, state, data):
    data = {{**data, "tries": data["tries"] + 1}}
    return ("keep_state", data, [("reply", etype[1], ({tag!r}, state, data))])
{extra}
"""


async def test_a_gen_statem_is_migrated_by_its_code_change_4(node: Node, code_dir: CodeDir) -> None:
    mod = code_dir.name("fsm")
    code_dir.write("fsm", STATEM.format(tag="v1", extra=""))
    pid = await gen_statem.start(mod, None)
    assert await gen_statem.call(pid, "x") == ("v1", "locked", {"tries": 1})
    extra = (
        "\ndef code_change(old_vsn, state, data, extra):\n"
        '    return ("ok", "open", {**data, "door": "migrated"})\n'
    )
    code_dir.write("fsm", STATEM.format(tag="v2", extra=extra))
    r = await reload_module(node, mod)
    assert (r.change, r.migrated) == ("advanced", (pid,))
    assert await gen_statem.call(pid, "x") == ("v2", "open", {"tries": 2, "door": "migrated"})


SUP = """
from relhandler.runtime import supervisor

def init(args):
    return ("ok", ({{"strategy": "one_for_one", "intensity": {n}}}, []))
"""


async def test_a_supervisor_module_gets_its_new_flags_from_the_new_init(
    node: Node, code_dir: CodeDir
) -> None:
    mod = code_dir.name("sup")
    code_dir.write("sup", SUP.format(n=1))
    pid = await supervisor.start_link(mod, None)
    code_dir.write("sup", SUP.format(n=7))
    r = await reload_module(node, mod)
    assert (r.change, r.migrated) == ("advanced", (pid,))
    assert node.processes[pid].sys.state.intensity == 7
