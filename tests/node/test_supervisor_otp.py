"""Supervisors, sys and gen_server cases where OTP's behaviour is the spec (issue 13).

Each test reproduces what OTP 25 does: an EXIT from a pid that is no longer a child is
ignored; a failed restart is retried (try_again_restart), each try counting against the
intensity; simple_one_for_one children are shut down and waited for; a start_link that
times out unlinks the late child before killing it; code_change on the release handler's
path runs in the process; a suspend queued behind messages takes effect after them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relhandler.errors import ProcessError, SysError
from relhandler.runtime import Node, Pid, gen_server, spawn, supervisor, sys, trap_exit
from relhandler.runtime._kernel import current_process

from .conftest import CodeDir, until

WORKER = """
from relhandler.runtime import gen_server

FAILS = {"left": 0, "attempts": 0}

def start_link(ident):
    FAILS["attempts"] += 1
    if FAILS["left"] > 0:
        FAILS["left"] -= 1
        return ("error", "not yet")
    return gen_server.start_link(__name__, ident)

def init(ident):
    return ("ok", ident)

def handle_call(req, from_, s):
    return ("reply", s, s)

def handle_cast(m, s):
    if m == "crash":
        raise RuntimeError("crash " + s)
    return ("noreply", s)
"""

SUP = """
def init(args):
    worker, strategy, intensity = args
    kids = [{"id": i, "start": (worker, "start_link", [i])} for i in ("a", "b")]
    return ("ok", ({"strategy": strategy, "intensity": intensity, "period": 60}, kids))
"""


async def _sup(node: Node, code_dir: CodeDir, strategy: str, intensity: int) -> tuple[Pid, Any]:
    code_dir.write("w", WORKER)
    code_dir.write("s", SUP)
    node.code.set_path([code_dir.root])
    sup = await supervisor.start(code_dir.name("s"), (code_dir.name("w"), strategy, intensity))
    return sup, node.code.current(code_dir.name("w"))


async def _kids(sup: Pid) -> dict[Any, Pid | None]:
    return {c.id: c.pid for c in await supervisor.which_children(sup)}


async def test_an_exit_from_a_pid_that_is_no_longer_a_child_is_ignored(code_dir: CodeDir) -> None:
    async with Node() as node:
        sup, _ = await _sup(node, code_dir, "one_for_all", 3)
        old = await _kids(sup)
        # both children of a one_for_all crash in the same turn: handling a's EXIT restarts
        # b too, so b's EXIT then comes from a pid the supervisor no longer knows
        gen_server.cast(old["a"], "crash")  # type: ignore[arg-type]
        gen_server.cast(old["b"], "crash")  # type: ignore[arg-type]
        await until(lambda: old["a"] not in node.processes and old["b"] not in node.processes)
        await until(lambda: not node.processes[sup].mailbox)
        assert sup in node.processes
        new = await _kids(sup)
        assert set(new) == {"a", "b"} and all(p is not None for p in new.values())
        assert not set(new.values()) & set(old.values())
        # and a stray EXIT (say, from a process the supervisor once linked) changes nothing
        node.processes[sup].deliver(("EXIT", Pid(999_999), "boom"))
        assert await _kids(sup) == new


async def test_a_failed_restart_is_retried_within_the_intensity(code_dir: CodeDir) -> None:
    async with Node() as node:
        sup, w = await _sup(node, code_dir, "one_for_one", 5)
        a = (await _kids(sup))["a"]
        w.FAILS.update(left=2, attempts=0)
        gen_server.cast(a, "crash")  # type: ignore[arg-type]
        await until(lambda: w.FAILS["attempts"] == 3)
        kids = await _kids(sup)
        assert kids["a"] is not None and kids["a"] != a and sup in node.processes
        # OTP counts every try: the crash and the two retries
        assert len(node.processes[sup].sys.state.restarts) == 3


async def test_a_restart_that_keeps_failing_ends_at_the_intensity(code_dir: CodeDir) -> None:
    async with Node() as node:
        sup, w = await _sup(node, code_dir, "one_for_one", 2)
        p = node.processes[sup]
        reason: list[Any] = []
        p.add_watcher(reason.append)
        a = (await _kids(sup))["a"]
        w.FAILS.update(left=100, attempts=0)
        gen_server.cast(a, "crash")  # type: ignore[arg-type]
        await until(lambda: bool(reason))
        # restarts 1 and 2 are tried (and fail), the 3rd exceeds intensity 2: shutdown
        assert w.FAILS["attempts"] == 2
        assert reason == ["shutdown"]


async def test_restart_of_one_for_all_retries_until_everyone_runs(code_dir: CodeDir) -> None:
    async with Node() as node:
        sup, w = await _sup(node, code_dir, "one_for_all", 5)
        old = await _kids(sup)
        w.FAILS.update(left=1, attempts=0)
        gen_server.cast(old["a"], "crash")  # type: ignore[arg-type]
        await until(lambda: w.FAILS["attempts"] >= 3)
        await until(lambda: not node.processes[sup].mailbox)
        new = await _kids(sup)
        assert all(p is not None and p in node.processes for p in new.values())
        assert not set(new.values()) & set(old.values())


CONN = """
import asyncio
from relhandler.runtime import current_node, gen_server, trap_exit

def start_link(ident):
    return gen_server.start_link(__name__, ident)

def init(ident):
    trap_exit(True)
    return ("ok", ident)

def handle_call(req, from_, s):
    return ("reply", s, s)

def handle_cast(m, s):
    return ("noreply", s)

async def terminate(reason, s):
    if s == "stubborn":
        await asyncio.sleep(60)  # never finishes in time: killed after the spec's shutdown
    current_node().apps.append((s, reason))
"""

SOFO = """
def init(worker):
    return ("ok", ({"strategy": "simple_one_for_one"},
                   [{"id": "c", "start": (worker, "start_link", []), "shutdown": 0.2}]))
"""


async def test_simple_one_for_one_children_are_shut_down_and_waited_for(
    code_dir: CodeDir,
) -> None:
    async with Node() as node:
        code_dir.write("c", CONN)
        code_dir.write("sofo", SOFO)
        node.code.set_path([code_dir.root])
        node.apps = []  # the children's terminate log (no application controller here)
        sup = await supervisor.start(code_dir.name("sofo"), code_dir.name("c"))
        pids = []
        for ident in ("x", "y", "stubborn", "z"):
            _, pid = await supervisor.start_child(sup, [ident])
            pids.append(pid)
        t0 = asyncio.get_running_loop().time()
        await gen_server.stop(sup, "shutdown")
        took = asyncio.get_running_loop().time() - t0
        # every child got the shutdown at once; the stubborn one was killed after 0.2 s
        assert sorted(node.apps) == [("x", "shutdown"), ("y", "shutdown"), ("z", "shutdown")]
        assert not any(p in node.processes for p in pids)
        assert 0.15 < took < 5


SLOW = """
import asyncio

def init(args):
    return asyncio.sleep(30, ("ok", None))  # an init that never returns in time

def handle_call(req, from_, s):
    return ("reply", s, s)
"""


@pytest.mark.parametrize("trapping", [False, True], ids=["plain", "trap_exit"])
async def test_start_link_timeout_unlinks_the_late_child_before_killing_it(
    code_dir: CodeDir, trapping: bool
) -> None:
    async with Node() as node:
        code_dir.write("slow", SLOW)
        node.code.set_path([code_dir.root])
        out: list[Any] = []

        async def caller() -> None:
            trap_exit(trapping)
            try:
                await gen_server.start_link(code_dir.name("slow"), None, timeout=0.05)
            except ProcessError as e:
                out.append(str(e))
            await asyncio.sleep(0.1)  # a killed linked child would have killed us by now
            me = current_process()
            assert me is not None
            out.append(("alive", list(me.mailbox), set(me.links)))

        pid = spawn(caller)
        await until(lambda: len(out) == 2, timeout=5)
        assert "did not return within 0.05s" in out[0]
        assert out[1] == ("alive", [], set())  # no EXIT left behind, no link
        await until(lambda: pid not in node.processes)
        assert [p for p in node.processes.values() if "slow" in p.initial_call] == []


IDENTITY = """
import asyncio
from relhandler.runtime import self_pid
from relhandler.runtime._kernel import current_process

def init(args):
    return ("ok", {"msgs": []})

async def handle_cast(msg, state):
    if msg == "block":
        await state["gate"].wait()
        return ("noreply", state)
    if isinstance(msg, tuple) and msg[0] == "gate":
        return ("noreply", {**state, "gate": msg[1]})
    return ("noreply", {**state, "msgs": state["msgs"] + [msg]})

def handle_call(req, from_, state):
    return ("reply", state, state)

def code_change(old_vsn, state, extra):
    if extra == "async":
        return _async_cc(state)
    return ("ok", {**state, "me": self_pid(), "proc": current_process().pid,
                   "seen_at_change": list(state["msgs"])})

async def _async_cc(state):
    await asyncio.sleep(0)
    return ("ok", {**state, "me": self_pid(), "proc": current_process().pid})
"""


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_code_change_on_the_release_handler_path_runs_in_the_process(
    code_dir: CodeDir, kind: str
) -> None:
    async with Node() as node:
        code_dir.write("ident", IDENTITY)
        node.code.set_path([code_dir.root])
        mod = code_dir.name("ident")
        pid = await gen_server.start(mod, None)
        r = await sys.suspend_many([pid])
        assert r.suspended == (pid,)
        before: dict[Pid, Any] = {}
        errors = await sys.change_code_many([pid], mod, "1", kind, before=before)
        assert errors == []
        state = node.processes[pid].sys.state
        assert state["me"] == pid and state["proc"] == pid
        sys.resume_many([pid])


@pytest.mark.parametrize("batch", [False, True], ids=["sys.suspend", "suspend_many"])
async def test_a_suspend_queued_behind_messages_takes_effect_after_them(
    code_dir: CodeDir, batch: bool
) -> None:
    async with Node() as node:
        code_dir.write("ident", IDENTITY)
        node.code.set_path([code_dir.root])
        mod = code_dir.name("ident")
        pid = await gen_server.start(mod, None)
        gate = asyncio.Event()
        gen_server.cast(pid, ("gate", gate))
        gen_server.cast(pid, "block")  # busy in a callback while the rest queues
        await until(lambda: node.processes[pid].sys.in_callback)
        gen_server.cast(pid, "m1")
        gen_server.cast(pid, "m2")
        suspending: asyncio.Future[Any] = asyncio.ensure_future(
            sys.suspend_many([pid], 5.0) if batch else sys.suspend(pid, 5.0)
        )
        await asyncio.sleep(0)
        gen_server.cast(pid, "m3")  # sent after the suspend: waits for the resume
        gate.set()
        await suspending
        s = node.processes[pid].sys
        assert s.suspended
        assert s.state["msgs"] == ["m1", "m2"]  # handled by the old code, before the suspend
        await sys.change_code_many([pid], mod, "1", "sync")
        assert s.state["seen_at_change"] == ["m1", "m2"]
        await sys.resume(pid, timeout=1.0)
        await until(lambda: s.state["msgs"] == ["m1", "m2", "m3"])


async def test_resume_honours_its_timeout(code_dir: CodeDir) -> None:
    async with Node() as node:
        code_dir.write("ident", IDENTITY)
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(code_dir.name("ident"), None)
        gate = asyncio.Event()
        gen_server.cast(pid, ("gate", gate))
        gen_server.cast(pid, "block")
        await until(lambda: node.processes[pid].sys.in_callback)
        # not suspended and busy: the resume request waits its turn, as OTP's does
        with pytest.raises(SysError, match=r"did not answer resume within 0\.05s"):
            await sys.resume(pid, timeout=0.05)
        gate.set()


APP_WITH_STATE = """
from relhandler.runtime import spawn, receive

EVENTS = []

async def _top():
    await receive()

def start():
    return ("ok", spawn(_top), {"token": 42})

def prep_stop(state):
    EVENTS.append(("prep_stop", state))
    return {**state, "prepped": True}

def stop(state):
    EVENTS.append(("stop", state))
"""


async def test_an_applications_stop_gets_the_state_its_start_returned(code_dir: CodeDir) -> None:
    from relhandler.release.model import AppSpec
    from relhandler.runtime.application import AppController

    async with Node() as node:
        code_dir.write("app", APP_WITH_STATE)
        node.code.set_path([code_dir.root])
        mod = code_dir.name("app")
        ctl = AppController(node)
        ctl.load(AppSpec(mod, "1.0.0", (mod,), (), f"{mod}:start", {}))
        await ctl.start(mod, "temporary")
        await ctl.stop(mod)
        assert node.code.current(mod).EVENTS == [
            ("prep_stop", {"token": 42}),
            ("stop", {"token": 42, "prepped": True}),
        ]
