"""Runtime behaviour not covered elsewhere: packages and relative imports under the code
server, autoload, snapshot/restore, tail calls, supervisor code_change (semantics §8), the
per-process sys forms' typed errors, raw processes not suspendable, crash logging."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys as pysys

import pytest

from relhandler.errors import CallTimeoutError, ModuleLoadError, NoProcError, SysError
from relhandler.runtime import Node, gen_server, receive, supervisor, sys

from .conftest import CodeDir, until


def _package(code_dir: CodeDir, v: int) -> str:
    pkg = code_dir.name("pkg")
    d = code_dir.root / pkg
    d.mkdir(exist_ok=True)
    (d / "__init__.py").write_text(f"from . import helper\nVERSION = {v}\n")
    (d / "helper.py").write_text(f"def word():\n    return 'helper v{v}'\n")
    (d / "user.py").write_text(
        "from .helper import word as _w\n"
        "from . import helper\n"
        f"import {pkg}.helper\n"
        "def both():\n"
        f"    return (helper.word(), {pkg}.helper.word())\n"
    )
    return pkg


async def test_package_submodules_relative_imports_and_autoload(code_dir: CodeDir) -> None:
    pkg = _package(code_dir, 1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        # a plain import statement autoloads through the code server (no explicit load)
        user = importlib.import_module(f"{pkg}.user")
        assert node.code.is_loaded(pkg) and node.code.is_loaded(f"{pkg}.helper")
        assert user.both() == ("helper v1", "helper v1")
        assert pysys.modules[pkg].helper is pysys.modules[f"{pkg}.helper"]
        assert pysys.modules[pkg].VERSION == 1

        (code_dir.root / pkg / "helper.py").write_text("def word():\n    return 'helper v2'\n")
        node.code.load(f"{pkg}.helper")
        # user.py holds the live module for helper, so its qualified calls see v2
        assert user.both() == ("helper v2", "helper v2")
        assert node.code.has_old(f"{pkg}.helper")
    # the node removes its live modules on close
    assert pkg not in pysys.modules and f"{pkg}.user" not in pysys.modules


async def test_vsn_literal_known_at_prepare_else_source_hash(code_dir: CodeDir) -> None:
    a = code_dir.name("a")
    b = code_dir.name("b")
    code_dir.write("a", '__vsn__ = "3.1"\nX = 1\n')
    code_dir.write("b", "X = 1\n")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        assert node.code.prepare(a).vsn == "3.1"
        assert not node.code.is_loaded(a)  # prepare executes nothing
        hb1 = node.code.load(b).vsn
        code_dir.write("b", "X = 2\n")
        hb2 = node.code.load(b).vsn
        assert hb1 != hb2 and node.code.old_vsn(b) == hb1 and node.code.vsn(b) == hb2


async def test_snapshot_restore_puts_back_current_old_and_proxies(code_dir: CodeDir) -> None:
    m = code_dir.name("m")
    n = code_dir.name("n")
    code_dir.write("m", "V = 1\n")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        node.code.load(m)
        snap = node.code.snapshot()
        code_dir.write("m", "V = 2\n")
        node.code.load(m)
        code_dir.write("n", "V = 9\n")
        node.code.load(n)
        assert pysys.modules[m].V == 2 and n in pysys.modules
        node.code.restore(snap)
        assert pysys.modules[m].V == 1
        assert not node.code.has_old(m)
        assert not node.code.is_loaded(n) and n not in pysys.modules


async def test_failed_load_leaves_running_process_and_table_untouched(code_dir: CodeDir) -> None:
    m = code_dir.name("srv")
    code_dir.write(
        "srv",
        "def init(a):\n    return ('ok', a)\n"
        "def handle_call(r, f, s):\n    return ('reply', ('v1', s), s)\n",
    )
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(m, 5)
        vsn = node.code.vsn(m)
        code_dir.write("srv", "def init(a):\n    return ('ok', a\n")
        with pytest.raises(ModuleLoadError) as ei:
            node.code.load(m)
        assert ei.value.details["line"] == 2 and m in str(ei.value)
        code_dir.write("srv", "raise ImportError('at import')\n")
        with pytest.raises(ModuleLoadError, match="at import"):
            node.code.load(m)
        assert node.code.vsn(m) == vsn and not node.code.has_old(m)
        assert await gen_server.call(pid, "x") == ("v1", 5)


TAIL = """
import {me}
from relhandler.runtime import receive
VERSION = {v}

async def count(n, out):
    if n == 0:
        msg = await receive()
        out.append(VERSION)
        return {me}.count(1, out)
    return count(n - 1, out)
"""


async def test_tail_calls_do_not_grow_the_stack_and_pick_up_new_code(code_dir: CodeDir) -> None:
    me = code_dir.name("tail")
    code_dir.write("tail", TAIL.format(me=me, v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        out: list[int] = []
        # 100,000 self tail calls: far past the recursion limit if frames were kept
        pid = node.spawn(node.code.live(me).count, 100_000, out)
        node.send(pid, "go")
        await until(lambda: out == [1])
        code_dir.write("tail", TAIL.format(me=me, v=2))
        node.code.load(me)
        assert node.code.check_process_code(pid, me)  # parked in v1's (now old) receive
        node.send(pid, "go")  # handled by v1, then the qualified tail call enters v2
        await until(lambda: len(out) == 2)
        node.send(pid, "go")
        await until(lambda: len(out) == 3)
        assert out == [1, 1, 2]
        assert not node.code.check_process_code(pid, me)
        assert pid in node.processes


WORKER = """
def start_link(ident):
    from relhandler.runtime import gen_server
    return gen_server.start_link(__name__, ident)
def init(ident):
    return ("ok", ident)
def handle_call(req, from_, s):
    return ("reply", s, s)
"""

SUP_V = """
__vsn__ = "{v}"
def init(worker):
    ids = {ids!r}
    return ("ok", ({{"strategy": "one_for_one", "intensity": {intensity}, "period": 5}},
                   [{{"id": i, "start": (worker, "start_link", [i + "{v}"]),
                      "shutdown": {shutdown}}} for i in ids]))
"""


async def test_supervisor_code_change_reruns_init_and_updates_specs_by_id(
    code_dir: CodeDir,
) -> None:
    w = code_dir.name("w")
    s = code_dir.name("s")
    code_dir.write("w", WORKER)
    code_dir.write("s", SUP_V.format(v=1, ids=["a", "b"], intensity=1, shutdown=0.1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        sup = await supervisor.start(s, w)
        before = {c.id: c.pid for c in await supervisor.which_children(sup)}
        code_dir.write("s", SUP_V.format(v=2, ids=["b", "c"], intensity=7, shutdown=0.3))
        node.code.load(s)
        await sys.suspend(sup)
        await sys.change_code(sup, s, "1", None)
        await sys.resume(sup)
        kids = {c.id: c for c in await supervisor.which_children(sup)}
        # a and b keep running untouched; c is added but not started (OTP)
        assert list(kids) == ["a", "b", "c"]
        assert kids["a"].pid == before["a"] and kids["b"].pid == before["b"]
        assert kids["c"].pid is None
        state = await sys.get_state(sup)
        assert state.intensity == 7
        # b's spec was replaced: restarting it uses the new start args
        await supervisor.terminate_child(sup, "b")
        _, pb = await supervisor.restart_child(sup, "b")
        assert await gen_server.call(pb, "who") == "b2"
        _, pc = await supervisor.restart_child(sup, "c")
        assert await gen_server.call(pc, "who") == "c2"
        # a's spec was not in the new init: kept as it was
        await supervisor.terminate_child(sup, "a")
        _, pa = await supervisor.restart_child(sup, "a")
        assert await gen_server.call(pa, "who") == "a1"


HOLDING = """
import asyncio
def init(a):
    return ("ok", {"gate": None})
def handle_call(req, from_, s):
    return ("reply", s, s)
async def handle_cast(msg, s):
    await msg.wait()
    return ("noreply", s)
"""


async def test_per_process_sys_errors_are_typed_and_name_the_process(code_dir: CodeDir) -> None:
    m = code_dir.name("busy")
    code_dir.write("busy", HOLDING)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(m, None)
        gate = asyncio.Event()
        gen_server.cast(pid, gate)
        await until(lambda: node.processes[pid].sys.in_callback)
        with pytest.raises(SysError, match=rf"{pid}.*get_state") as ei:
            await sys.get_state(pid, timeout=0.01)
        assert ei.value.code == "sys_timeout"
        with pytest.raises(SysError, match=str(pid)) as ei2:
            await sys.suspend(pid, timeout=0.01)
        assert ei2.value.code == "sys_timeout"
        # the withdrawn suspend leaves the process running once the callback ends
        gate.set()
        assert await gen_server.call(pid, "x") == {"gate": None}
        assert not (await sys.get_status(pid))["suspended"]
        # change_code on a process that is not suspended is refused, state unchanged
        with pytest.raises(SysError, match="not suspended"):
            await sys.change_code(pid, m, "1", None)
        raw = node.spawn(receive)
        with pytest.raises(SysError, match="not a behaviour"):
            await sys.suspend(raw)
        r = await sys.suspend_many([raw, pid])
        assert r.suspended == (pid,) and r.skipped == ((raw, "not_a_behaviour"),)
        sys.resume_many([pid])
        stuck = asyncio.Event()
        gen_server.cast(pid, stuck)
        with pytest.raises(CallTimeoutError, match=rf"stop of {pid}"):
            await gen_server.stop(pid, timeout=0.01)
        stuck.set()  # the queued stop request is honoured after the callback
        await until(lambda: pid not in node.processes)
        with pytest.raises(NoProcError):
            await sys.get_state(pid)


async def test_crashing_process_logs_its_traceback(
    code_dir: CodeDir, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise ValueError("deliberate crash 7731")

    async with Node() as node:
        with caplog.at_level(logging.ERROR, logger="relhandler.runtime"):
            pid = node.spawn(boom)
            await until(lambda: pid not in node.processes)
    recs = [r for r in caplog.records if "deliberate crash 7731" in (r.exc_text or r.getMessage())]
    assert recs and recs[0].name.startswith("relhandler.runtime")
    assert recs[0].exc_info is not None or "Traceback" in (recs[0].exc_text or "")
