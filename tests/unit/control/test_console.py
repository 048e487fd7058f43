"""The console's node side on an in-process node: evaluation in a shell process, captured
output, tracebacks, interrupts, completion, sessions (the e2e tests drive the real CLI)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.console import Consoles
from relhandler.errors import UsageError
from relhandler.runtime import Node, Pid, receive

_ids = itertools.count(1)

SERVER = """
from relhandler.runtime import gen_server

def start():
    return gen_server.start(__name__, None, name={name!r})

def init(args):
    return ("ok", {{"n": 0}})

def handle_call(req, from_, state):
    if req == "incr":
        state = {{"n": state["n"] + 1}}
        return ("reply", state["n"], state)
    return ("reply", state, state)

def handle_cast(msg, state):
    return ("noreply", state)
"""


@dataclass
class Env:
    node: Node
    consoles: Consoles
    sid: str
    pkg: str
    server: str

    async def ev(self, source: str) -> dict[str, Any]:
        return await self.consoles.eval({"session": self.sid, "source": source})


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    code = tmp_path / "code"
    pkg = f"console{next(_ids)}"
    (code / pkg).mkdir(parents=True)
    (code / pkg / "__init__.py").write_text("")
    (code / pkg / "srv.py").write_text(SERVER.format(name=f"{pkg}_srv"))
    async with Node() as node:
        node.code.set_path([code])
        await node.code.current(f"{pkg}.srv").start()
        consoles = Consoles(node)
        info = consoles.open()
        yield Env(node, consoles, info["session"], pkg, f"{pkg}_srv")
        consoles.close(info["session"])


async def test_value_await_and_names_that_persist(env: Env) -> None:
    r = await env.ev("x = 20\nimport asyncio\nawait asyncio.sleep(0)\nx + 1")
    assert r["value"] == "21" and r["error"] is None
    assert (await env.ev("_ * 2"))["value"] == "42"
    assert (await env.ev("x = 5"))["value"] is None
    # a coroutine value (await forgotten) is awaited
    assert (await env.ev("asyncio.sleep(0, 'slept')"))["value"] == "'slept'"


async def test_scope_reads_and_calls_a_genserver(env: Env) -> None:
    assert (await env.ev(f"await get_state({env.server!r})"))["value"] == "{'n': 0}"
    assert (await env.ev(f"await call({env.server!r}, 'incr')"))["value"] == "1"
    pid = (await env.ev(f"str(whereis({env.server!r}))"))["value"]
    assert (await env.ev(f"process_info({pid}).name"))["value"] == repr(env.server)
    # the loaded package is in scope by name, as a live handle on its current version
    r = await env.ev(f"which({env.pkg}.srv).current_file")
    assert r["value"] is not None and r["value"].endswith("srv.py'")


async def test_an_input_that_raises_returns_its_traceback_and_keeps_the_shell(env: Env) -> None:
    shell = (await env.ev("self_pid()"))["value"]
    r = await env.ev("def f():\n    return 1 / 0\nf()")
    assert r["error_type"] == "ZeroDivisionError"
    assert 'File "<console#2>", line 2, in f' in r["error"] and "return 1 / 0" in r["error"]
    assert "console.py" not in r["error"]  # the evaluator's own frames are left out
    for source in ("raise SystemExit(3)", "raise KeyboardInterrupt", "(", "await receive(0)"):
        assert (await env.ev(source))["error"] is not None, source
    assert (await env.ev("self_pid()"))["value"] == shell
    assert (await env.ev(f"await call({env.server!r}, 'incr')"))["value"] == "1"


async def test_output_is_captured_per_input_only(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    async def chatty() -> None:
        await receive()
        print("from another process")

    other = env.node.spawn(chatty)
    r = await env.ev(
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\n"
        f"send(pid({str(other)!r}), 'go')\nimport asyncio\nawait asyncio.sleep(0.01)\n7"
    )
    assert (r["stdout"], r["stderr"], r["value"]) == ("out\n", "err\n", "7")
    assert "from another process" in capsys.readouterr().out
    # a process an input spawned prints to the node's output once the input is over
    r = await env.ev(
        "async def late():\n    await receive()\n    print('late print')\nlater = spawn(late)"
    )
    assert r["error"] is None
    r = await env.ev("send(later, 'go')\nawait asyncio.sleep(0.01)")
    assert r["stdout"] == "" and "late print" in capsys.readouterr().out


async def test_killing_the_shell_gives_a_new_one_with_the_same_names(env: Env) -> None:
    first = (await env.ev("kept = 'yes'\nself_pid()"))["value"]
    r = await env.ev("import relhandler.runtime as rt\nrt.exit(self_pid(), 'kill')")
    assert r["error_type"] == "ShellExit" and "exited ('killed')" in r["error"]
    again = await env.ev("(self_pid(), kept)")
    assert again["value"] is not None and first not in again["value"]
    assert "'yes'" in again["value"]


async def test_interrupt_ends_a_blocked_input(env: Env) -> None:
    task = asyncio.ensure_future(env.ev("print('waiting')\nawait receive()"))
    for _ in range(100):
        await asyncio.sleep(0)
    assert env.consoles.interrupt({"session": env.sid}) == {"interrupted": True}
    r = await task
    assert r["error_type"] == "KeyboardInterrupt" and r["stdout"] == "waiting\n"
    assert (await env.ev("1 + 1"))["value"] == "2"
    assert env.consoles.interrupt({"session": env.sid}) == {"interrupted": False}


async def test_completion_asks_the_sessions_namespace(env: Env) -> None:
    assert "get_state(" in env.consoles.complete({"session": env.sid, "text": "get_st"})["matches"]
    await env.ev("my_value = 3")
    assert env.consoles.complete({"session": env.sid, "text": "my_v"})["matches"] == ["my_value"]
    m = env.consoles.complete({"session": env.sid, "text": f"{env.pkg}.s"})["matches"]
    assert f"{env.pkg}.srv" in m


async def test_exit_leaves_and_a_closed_session_is_gone(env: Env) -> None:
    assert (await env.ev("exit()"))["leave"] is True
    shell = Pid.parse(str((await env.ev("self_pid()"))["value"]))
    env.consoles.close(env.sid)
    await asyncio.sleep(0)
    assert env.node.resolve(shell) is None
    with pytest.raises(UsageError, match="no console session"):
        await env.ev("1")


async def test_sessions_are_separate(env: Env) -> None:
    other = env.consoles.open()["session"]
    await env.ev("mine = 1")
    r = await env.consoles.eval({"session": other, "source": "mine"})
    assert r["error_type"] == "NameError"
    env.consoles.close(other)


async def test_an_interrupt_never_stops_a_reload_halfway(tmp_path: Path) -> None:
    """Ctrl-C during `await reload(m)` kills the shell process; the reload, which runs in a
    task of the node's, still migrates the server's state and makes the new code current."""
    from relhandler.control.console import _reloader

    code = tmp_path / "code"
    code.mkdir()
    mod = f"console{next(_ids)}_slow"
    src = code / f"{mod}.py"
    src.write_text(SERVER.format(name=mod))
    async with Node() as node:
        node.code.set_path([code])
        await node.code.current(mod).start()

        @dataclass
        class Main:
            node: Node
            handler: Any = None

            def request_restart(self) -> None:
                raise AssertionError("no restart expected")

        consoles = Consoles(node, _reloader(Main(node)))  # type: ignore[arg-type]
        sid = consoles.open()["session"]
        src.write_text(
            SERVER.format(name=mod)
            + "\nimport asyncio\n\nasync def code_change(old, state, extra):\n"
            "    await asyncio.sleep(0.3)\n    return ('ok', {'n': state['n'], 'v': 2})\n"
        )
        v1 = node.code.vsn(mod)
        task = asyncio.ensure_future(
            consoles.eval({"session": sid, "source": f"await reload({mod!r})"})
        )
        # the reload is under way, in code_change: past the preflight (which awaits a trial
        # of the async code_change first), the new code loaded
        for _ in range(500):
            if node.code.vsn(mod) != v1:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert consoles.interrupt({"session": sid}) == {"interrupted": True}
        assert (await task)["error_type"] == "KeyboardInterrupt"
        # the reload goes on without the shell: the new code_change migrates the state
        before = node.code.vsn(mod)
        source = (
            f"import asyncio\nwhile 'v' not in await get_state({mod!r}):"
            " await asyncio.sleep(0.02)\n1"
        )
        r = await asyncio.wait_for(consoles.eval({"session": sid, "source": source}), 5)
        assert r["value"] == "1", r
        r = await consoles.eval({"session": sid, "source": f"await get_state({mod!r})"})
        assert r["value"] == "{'n': 0, 'v': 2}", r
        assert node.code.vsn(mod) == before and "code_change" in dir(node.code.current(mod))
        consoles.close(sid)


async def test_a_session_lives_as_long_as_its_connection() -> None:
    """Over a real control socket: the namespace persists between requests of one
    connection; closing it (even in the middle of an input) ends the session and its shell
    process."""
    import shutil
    import tempfile

    from relhandler.control.client import Client
    from relhandler.control.console import make_op
    from relhandler.control.server import ControlServer, ensure_cookie
    from relhandler.errors import UnreachableError

    root = Path(tempfile.mkdtemp(prefix="rhcon"))  # AF_UNIX paths are short
    try:
        async with Node() as node:

            @dataclass
            class Main:
                node: Node
                handler: Any = None

                def request_restart(self) -> None:
                    raise AssertionError("no restart expected")

            server = ControlServer(
                root,
                ensure_cookie(root),
                {"console": make_op(Main(node))},  # type: ignore[arg-type]
            )
            await server.start()

            def shells() -> int:
                return sum(p.initial_call == "console:shell" for p in node.processes.values())

            def session(blocking_input: bool) -> Any:
                c = Client(root, timeout=5).open()
                try:
                    sid = c.call("console", {"action": "open"})["session"]
                    c.call("console", {"action": "eval", "session": sid, "source": "x = 41"})
                    got = c.call("console", {"action": "eval", "session": sid, "source": "x + 1"})[
                        "value"
                    ]
                    if blocking_input:
                        with pytest.raises(UnreachableError):
                            c.call(
                                "console",
                                {"action": "eval", "session": sid, "source": "await receive()"},
                                timeout=0.3,
                            )
                    return got
                finally:
                    c.close()

            for blocking in (False, True):
                assert await asyncio.to_thread(session, blocking) == "42"
                for _ in range(200):
                    if shells() == 0:
                        break
                    await asyncio.sleep(0.02)
                assert shells() == 0, f"the shell process outlived its connection ({blocking=})"
            await server.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
