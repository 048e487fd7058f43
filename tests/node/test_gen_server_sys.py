"""GenServer and the sys protocol: plain load, suspend → load → change_code → resume."""

from __future__ import annotations

import asyncio

import pytest

from relhandler.errors import CallExitError, CallTimeoutError, NoProcError, ProcessError
from relhandler.runtime import Node, gen_server, sys

from .conftest import CodeDir, until

V1 = """
__vsn__ = "1"

def init(args):
    return ("ok", {"count": args})

def handle_call(req, from_, state):
    if req == "get":
        return ("reply", ("v1", state), state)
    if req == "crash":
        raise RuntimeError("asked to crash")
    if req == "stop":
        return ("stop", "normal", "bye", state)
    if req == "later":
        return ("noreply", {**state, "pending": from_})
    return ("reply", "ok", state)

def handle_cast(msg, state):
    if msg == "answer":
        from relhandler.runtime import gen_server
        gen_server.reply(state["pending"], 42)
        return ("noreply", {"count": state["count"]})
    seen = state.get("seen", []) + [msg]
    return ("noreply", {**state, "count": state["count"] + 1, "seen": seen})
"""

V2 = """
__vsn__ = "2"

def init(args):
    return ("ok", {"count": args, "history": []})

def handle_call(req, from_, state):
    if req == "get":
        return ("reply", ("v2", state), state)
    return ("reply", "ok", state)

def handle_cast(msg, state):
    return ("noreply", {**state, "count": state["count"] + 1,
                        "seen": state.get("seen", []) + [msg],
                        "history": state["history"] + [msg]})

def code_change(old_vsn, state, extra):
    if extra == "boom":
        raise ValueError("deliberate code_change failure")
    if old_vsn == "1":
        return ("ok", {**state, "history": list(extra), "from": old_vsn})
    return ("ok", state)
"""


async def test_plain_load_next_callback_runs_new_code_with_old_state(code_dir: CodeDir) -> None:
    me = code_dir.name("srv")
    code_dir.write("srv", V1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, 5)
        gen_server.cast(pid, "a")
        assert await gen_server.call(pid, "get") == ("v1", {"count": 6, "seen": ["a"]})
        code_dir.write("srv", V2)
        node.code.load(me)
        assert await gen_server.call(pid, "get") == ("v2", {"count": 6, "seen": ["a"]})


async def test_suspend_load_change_code_resume_migrates_and_keeps_order(
    code_dir: CodeDir,
) -> None:
    me = code_dir.name("srv")
    code_dir.write("srv", V1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, 0)
        r = await sys.suspend_many([pid])
        assert r.suspended == (pid,) and r.skipped == ()
        # messages sent while suspended queue up, in order
        for i in range(5):
            gen_server.cast(pid, i)
        getter = asyncio.ensure_future(gen_server.call(pid, "get"))
        await asyncio.sleep(0)  # let the call task deliver its request
        for i in range(5, 8):
            gen_server.cast(pid, i)
        await asyncio.sleep(0.01)
        assert not getter.done()
        code_dir.write("srv", V2)
        node.code.load(me)
        errors = await sys.change_code_many([pid], me, "1", ("seed",))
        assert errors == []
        sys.resume_many([pid])
        v, state = await getter
        assert v == "v2"
        # the 5 casts before the call ran first, in order, with v2's handle_cast
        assert state["seen"] == [0, 1, 2, 3, 4]
        assert state["history"] == ["seed", 0, 1, 2, 3, 4]
        assert state["from"] == "1"
        _, final = await gen_server.call(pid, "get")
        assert final["seen"] == list(range(8)) and final["count"] == 8


async def test_raising_code_change_keeps_old_state_and_reports(code_dir: CodeDir) -> None:
    me = code_dir.name("srv")
    code_dir.write("srv", V1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, 3)
        await sys.suspend(pid)
        code_dir.write("srv", V2)
        node.code.load(me)
        errors = await sys.change_code_many([pid], me, "1", "boom")
        assert [(p, type(e), str(e)) for p, e in errors] == [
            (pid, ValueError, "deliberate code_change failure")
        ]
        with pytest.raises(ValueError, match="deliberate"):
            await sys.change_code(pid, me, "1", "boom")
        assert await sys.get_state(pid) == {"count": 3}
        await sys.resume(pid)
        assert await gen_server.call(pid, "get") == ("v2", {"count": 3})


async def test_busy_process_suspends_after_callback_or_is_skipped(code_dir: CodeDir) -> None:
    me = code_dir.name("slow")
    code_dir.write(
        "slow",
        """
import asyncio
def init(a): return ("ok", 0)
async def handle_call(req, from_, s):
    await asyncio.sleep(req)
    return ("reply", req, s + 1)
""",
    )
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me)
        busy = asyncio.ensure_future(gen_server.call(pid, 0.05))
        await asyncio.sleep(0.005)
        r = await sys.suspend_many([pid], timeout=2.0)
        assert r.suspended == (pid,)  # waited for the callback to finish
        assert busy.done()
        sys.resume_many([pid])
        busy2 = asyncio.ensure_future(gen_server.call(pid, 0.3))
        await asyncio.sleep(0.005)
        r = await sys.suspend_many([pid], timeout=0.01)
        assert r.suspended == () and r.skipped == ((pid, "timeout"),)
        assert await busy2 == 0.3
        # the withdrawn suspend did not leave it suspended
        assert await gen_server.call(pid, 0) == 0


async def test_call_errors_and_deferred_reply(code_dir: CodeDir) -> None:
    me = code_dir.name("srv")
    code_dir.write("srv", V1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, 0)
        later = asyncio.ensure_future(gen_server.call(pid, "later"))
        await asyncio.sleep(0)
        gen_server.cast(pid, "answer")
        assert await later == 42
        assert await gen_server.call(pid, "stop") == "bye"
        await until(lambda: pid not in node.processes)
        with pytest.raises(NoProcError):
            await gen_server.call(pid, "get")
        pid2 = await gen_server.start(me, 0)
        with pytest.raises(CallExitError) as ei:
            await gen_server.call(pid2, "crash")
        assert isinstance(ei.value.reason, RuntimeError)
        pid3 = await gen_server.start(me, 0)
        await sys.suspend(pid3)
        with pytest.raises(CallTimeoutError):
            await gen_server.call(pid3, "get", timeout=0.02)


async def test_init_failures_are_typed(code_dir: CodeDir) -> None:
    me = code_dir.name("bad")
    code_dir.write("bad", "def init(a):\n    return ('stop', 'no_way')\n")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        with pytest.raises(ProcessError, match="no_way"):
            await gen_server.start(me)
        assert node.names == {}


async def test_get_status_and_replace_state(code_dir: CodeDir) -> None:
    me = code_dir.name("srv")
    code_dir.write("srv", V1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, 1)
        assert await sys.replace_state(pid, lambda s: {**s, "count": 10}) == {"count": 10}
        st = await sys.get_status(pid)
        assert st["module"] == me and st["state"] == {"count": 10} and not st["suspended"]
        assert await sys.get_modules(pid) == [me]
