"""gen_statem (runtime/gen_statem.py): OTP 25's event handling, timeouts and code change.

The expected event orders marked "OTP 25" were recorded by running the same machine as an
Erlang gen_statem on OTP 25.2 (erts 13.1.5).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relhandler.errors import CallExitError, ProcessError
from relhandler.runtime import Node, Pid, gen_statem, send, sys

from .conftest import CodeDir, until


def quiet(node: Node, pid: Pid) -> bool:
    """The machine waits for a message with nothing queued, inside or outside."""
    p = node.processes.get(pid)
    return (
        p is not None
        and p._waiter is not None
        and not p.mailbox
        and not p.sys.queue
        and not p.sys.in_callback
    )


async def settle(node: Node, pid: Pid, wait: float = 0.0) -> None:
    if wait:
        await asyncio.sleep(wait)
    await until(lambda: quiet(node, pid))


# the machine of the OTP 25 run: state enter calls, a zero event timeout, postpone,
# next_event and zero state/generic timeouts set by an enter call
ORDER = """
def callback_mode():
    return ["state_functions", "state_enter"]

def init(args):
    return ("ok", "a", [])

def a(etype, content, log):
    if etype == "enter":
        return ("keep_state", log + [("enter", "a", content)])
    if etype == "cast" and content == "t0":
        return ("keep_state_and_data", [("timeout", 0, "zero")])
    if etype == "timeout":
        return ("keep_state", log + [("evtimeout", content)])
    if etype == "cast" and content == "pp":
        return ("keep_state", log + [("a_postpone", "pp")], ["postpone"])
    if etype == "cast" and content == "go":
        return ("next_state", "b", log + [("a_go",)],
                [("next_event", "internal", "ne1"), ("next_event", "internal", "ne2")])
    if etype == "cast":
        return ("keep_state", log + [("a_cast", content)])
    return ("keep_state", log + [("a_info", content)])

def b(etype, content, log):
    if etype == "enter":
        return ("keep_state", log + [("enter", "b", content)],
                [("state_timeout", 0, "st0"), (("timeout", "g"), 0, "g0")])
    if etype == "internal":
        return ("keep_state", log + [("b_internal", content)])
    if etype == "state_timeout":
        return ("keep_state", log + [("b_state_timeout", content)])
    if isinstance(etype, tuple):
        return ("keep_state", log + [("b_gen_timeout", etype[1], content)])
    return ("keep_state", log + [("b_cast", content)])
"""


async def test_enter_calls_postpone_next_event_and_zero_timeouts_in_otp_order(
    code_dir: CodeDir,
) -> None:
    me = code_dir.name("order")
    code_dir.write("order", ORDER)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me)
        await sys.suspend(pid)
        gen_statem.cast(pid, "t0")
        gen_statem.cast(pid, "m1")
        send(pid, "i1")
        await sys.resume(pid)
        await settle(node, pid)
        await sys.suspend(pid)
        for m in ("pp", "go", "after1"):
            gen_statem.cast(pid, m)
        await sys.resume(pid)
        await settle(node, pid)
        state, log = await sys.get_state(pid)
        assert state == "b"
        assert log == [  # OTP 25
            ("enter", "a", "a"),
            ("evtimeout", "zero"),
            ("a_cast", "m1"),
            ("a_info", "i1"),
            ("a_postpone", "pp"),
            ("a_go",),
            ("enter", "b", "a"),
            ("b_internal", "ne1"),
            ("b_internal", "ne2"),
            ("b_cast", "pp"),
            ("b_state_timeout", "st0"),
            ("b_gen_timeout", "g", "g0"),
            ("b_cast", "after1"),
        ]


# handle_event_function: each timeout kind, cancel and update (the OTP 25 runs t2/t5)
TIMEOUTS = """
def callback_mode():
    return "handle_event_function"

def init(args):
    return ("ok", "a", [])

T = 0.03

def handle_event(etype, content, state, log):
    if etype == "cast":
        acts = {
            "all3": [(("timeout", "g"), T, "g1"), ("state_timeout", T, "s1"),
                     ("timeout", T, "e1")],
            "ev": [("timeout", T, "e")],
            "ev_bare": [T],
            "zero_and_next": [("timeout", 0, "zero"), ("next_event", "internal", "x")],
            "st0_ev0": [("state_timeout", 0, "s"), ("timeout", 0, "e")],
            "ev_then_inf": [("timeout", 0, "e5"), ("timeout", "infinity", "e6")],
            "upd_idle": [(("timeout", "g"), "update", "u")],
            "upd_running": [(("timeout", "g"), T, "g4"), (("timeout", "g"), "update", "u4")],
            "gen_cancel": [(("timeout", "g"), T, "g9"), (("timeout", "g"), "cancel")],
            "st_inf": [("state_timeout", T, "s9"), ("state_timeout", "infinity", None)],
        }.get(content)
        if acts is not None:
            return ("keep_state_and_data", acts)
        if content == "chg":
            return ("next_state", "b", log)
        if content == "rep":
            return ("repeat_state", log + [("rep",)])
    if etype == ("call", etype[1]) if isinstance(etype, tuple) and etype[0] == "call" else False:
        return ("keep_state_and_data", [("reply", etype[1], (state, log))])
    return ("keep_state", log + [(etype, content, state)])
"""


@pytest.mark.parametrize(
    ("casts", "expected"),
    [
        pytest.param(["ev"], [("timeout", "e", "a")], id="event-timeout-fires-when-idle"),
        pytest.param(["ev_bare"], [("timeout", 0.03, "a")], id="bare-time-is-event-timeout"),
        pytest.param(
            ["all3", "rep"],  # OTP 25: repeat_state cancels only the event timeout
            [("rep",), ("state_timeout", "s1", "a"), (("timeout", "g"), "g1", "a")],
            id="state-and-generic-survive-repeat",
        ),
        pytest.param(
            ["all3", "chg"],  # OTP 25: a state change cancels the state timeout
            [(("timeout", "g"), "g1", "b")],
            id="state-change-cancels-state-timeout",
        ),
        pytest.param(
            ["zero_and_next"],  # OTP 25: a queued event drops the event timeout
            [("internal", "x", "a")],
            id="queued-event-drops-zero-event-timeout",
        ),
        pytest.param(
            ["st0_ev0"], [("state_timeout", "s", "a")], id="zero-state-timeout-drops-event-one"
        ),
        pytest.param(["ev_then_inf"], [], id="last-event-timeout-wins"),
        pytest.param(["upd_idle"], [(("timeout", "g"), "u", "a")], id="update-idle-is-zero"),
        pytest.param(
            ["upd_running"], [(("timeout", "g"), "u4", "a")], id="update-running-keeps-time"
        ),
        pytest.param(["gen_cancel"], [], id="generic-cancel"),
        pytest.param(["st_inf"], [], id="infinity-cancels"),
    ],
)
async def test_timeouts_follow_otp(code_dir: CodeDir, casts: list[str], expected: Any) -> None:
    me = code_dir.name("tmo")
    code_dir.write("tmo", TIMEOUTS)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me)
        for c in casts:
            gen_statem.cast(pid, c)
        # every timer fires or is cancelled (one wrongly left running shows in the log)
        srv = node.processes[pid].sys
        await until(lambda: quiet(node, pid) and not srv.timers)
        _state, log = await sys.get_state(pid)
        # timers of the same length fire in no promised order (OTP's neither)
        assert sorted(map(repr, log)) == sorted(map(repr, expected))
        assert node.processes[pid].sys.timers == {}


async def test_any_event_cancels_the_event_timeout(code_dir: CodeDir) -> None:
    me = code_dir.name("tmo")
    code_dir.write("tmo", TIMEOUTS)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me)
        gen_statem.cast(pid, "ev")
        send(pid, "poke")  # an info event before the 30 ms are up
        await settle(node, pid, wait=0.1)
        assert await sys.get_state(pid) == ("a", [("info", "poke", "a")])


async def test_timer_firing_while_suspended_is_handled_after_resume(code_dir: CodeDir) -> None:
    me = code_dir.name("tmo")
    code_dir.write("tmo", TIMEOUTS)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me)
        gen_statem.cast(pid, "all3")
        await settle(node, pid)
        await sys.suspend(pid)
        box = node.processes[pid].mailbox
        await until(lambda: len(box) == 3)  # all three fire into the mailbox meanwhile
        assert await sys.get_state(pid) == ("a", [])
        await sys.resume(pid)
        await settle(node, pid)
        # the first to arrive is handled; it cancels the event timeout whose message is
        # already queued behind it, which is then dropped (OTP)
        _, log = await sys.get_state(pid)
        assert ("timeout", "e1", "a") not in log[1:]
        assert {e[0] for e in log} >= {"state_timeout", ("timeout", "g")}


LOCK = """
def callback_mode():
    return "state_functions"

def init(code):
    return ("ok", "locked", {"code": code, "tries": 0})

def locked(etype, content, data):
    if etype == "cast" and content == data["code"]:
        return ("next_state", "open", data, [("state_timeout", 5, "lock")])
    if etype == "cast":
        return ("keep_state", {**data, "tries": data["tries"] + 1})
    if isinstance(etype, tuple) and etype[0] == "call" and content == "enter":
        return ("keep_state_and_data", ["postpone"])
    if isinstance(etype, tuple) and etype[0] == "call" and content == "tries":
        return ("keep_state_and_data", [("reply", etype[1], data["tries"])])
    if isinstance(etype, tuple) and etype[0] == "call" and content == "halt":
        return ("stop_and_reply", "normal", [("reply", etype[1], "halting")])
    return "keep_state_and_data"

def open(etype, content, data):
    if isinstance(etype, tuple) and etype[0] == "call" and content == "enter":
        return ("keep_state_and_data", [("reply", etype[1], "welcome")])
    if etype == "state_timeout":
        return ("next_state", "locked", data)
    if etype == "cast" and content == "bad":
        return ("next_state",)
    return "keep_state_and_data"

def terminate(reason, state, data):
    import builtins, json, os
    path = os.environ.get("STATEM_TERMINATE_LOG")
    if path:
        with builtins.open(path, "a") as f:
            f.write(json.dumps([repr(reason), state, data]) + "\\n")
"""


async def test_postponed_call_is_answered_after_the_state_change(code_dir: CodeDir) -> None:
    me = code_dir.name("lock")
    code_dir.write("lock", LOCK)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me, "1234", name="door")
        waiter = asyncio.ensure_future(gen_statem.call("door", "enter"))
        gen_statem.cast(pid, "0000")
        assert await gen_statem.call(pid, "tries") == 1
        assert not waiter.done()
        assert node.processes[pid].sys.status()["postponed"] == 1
        gen_statem.cast(pid, "1234")
        assert await waiter == "welcome"
        assert (await sys.get_state(pid))[0] == "open"


async def test_stop_and_reply_and_stop_run_terminate(
    code_dir: CodeDir, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "term.log"
    monkeypatch.setenv("STATEM_TERMINATE_LOG", str(log))
    me = code_dir.name("lock")
    code_dir.write("lock", LOCK)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        a = await gen_statem.start(me, "1")
        assert await gen_statem.call(a, "halt") == "halting"
        await until(lambda: a not in node.processes)
        b = await gen_statem.start(me, "2")
        await gen_statem.stop(b, "shutdown")
        assert b not in node.processes
    lines = log.read_text().splitlines()
    assert lines == [
        '["\'normal\'", "locked", {"code": "1", "tries": 0}]',
        '["\'shutdown\'", "locked", {"code": "2", "tries": 0}]',
    ]


async def test_bad_return_ends_the_machine_with_otps_reason(code_dir: CodeDir) -> None:
    me = code_dir.name("lock")
    code_dir.write("lock", LOCK)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me, "1")
        p = node.processes[pid]
        gen_statem.cast(pid, "1")
        gen_statem.cast(pid, "bad")
        await until(lambda: not p.alive)
        assert p.exit_reason == ("bad_return_from_state_function", ("next_state",))
        pid2 = await gen_statem.start(me, "1")
        p2 = node.processes[pid2]
        p2.sys.state = ("nowhere", {})  # a state with no function
        with pytest.raises(CallExitError):
            await gen_statem.call(pid2, "x")
        assert isinstance(p2.exit_reason, ProcessError)
        assert "no state function 'nowhere'" in str(p2.exit_reason)


async def test_init_errors_are_typed(code_dir: CodeDir) -> None:
    me = code_dir.name("bad")
    code_dir.write(
        "bad",
        """
def callback_mode():
    return "state_functions"
def init(args):
    if args == "ignore":
        return "ignore"
    if args == "stop":
        return ("stop", "no")
    return ("ok", "s")
""",
    )
    mode = code_dir.name("mode")
    code_dir.write("mode", "def callback_mode(): return 'weird'\ndef init(a): return ('ok', 1, 2)")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        assert await gen_statem.start(me, "ignore") is None
        with pytest.raises(ProcessError, match="init stopped: 'no'"):
            await gen_statem.start(me, "stop")
        with pytest.raises(ProcessError, match=r"expected \('ok', state, data\)"):
            await gen_statem.start(me, "x")
        with pytest.raises(ProcessError, match="callback_mode"):
            await gen_statem.start(mode)


V1 = """
__vsn__ = "1"

def callback_mode():
    return ["state_functions", "state_enter"]

def init(n):
    return ("ok", "idle", n)

def idle(etype, content, n):
    if etype == "enter":
        return "keep_state_and_data"
    if etype == "cast":
        return ("next_state", "busy", n + content)
    return ("keep_state_and_data", [("reply", etype[1], ("v1", "idle", n))])

def busy(etype, content, n):
    if etype == "enter":
        return "keep_state_and_data"
    if etype == "cast":
        return ("next_state", "idle", n + content)
    return ("keep_state_and_data", [("reply", etype[1], ("v1", "busy", n))])
"""

# v2 changes the callback mode, the state names and the data's shape
V2 = """
__vsn__ = "2"

def callback_mode():
    return "handle_event_function"

def handle_event(etype, content, state, data):
    if etype == "cast":
        nxt = "BUSY" if state == "IDLE" else "IDLE"
        return ("next_state", nxt, {**data, "n": data["n"] + content,
                                    "seen": data["seen"] + [content]})
    return ("keep_state_and_data", [("reply", etype[1], ("v2", state, data))])

def code_change(old_vsn, state, data, extra):
    if extra == "boom":
        raise ValueError("deliberate")
    if old_vsn == ("down", "2"):
        return ("ok", state.lower(), data["n"])
    return ("ok", state.upper(), {"n": data, "seen": [], "from": old_vsn})
"""


async def test_code_change_migrates_state_name_and_data(code_dir: CodeDir) -> None:
    me = code_dir.name("sm")
    code_dir.write("sm", V1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me, 10)
        gen_statem.cast(pid, 1)
        assert await gen_statem.call(pid, "get") == ("v1", "busy", 11)
        r = await sys.suspend_many([pid])
        assert r.suspended == (pid,)
        gen_statem.cast(pid, 5)  # queued while suspended: handled by v2, after the change
        code_dir.write("sm", V2)
        node.code.load(me)
        assert await sys.change_code_many([pid], me, "1", "boom") != []
        assert await sys.get_state(pid) == ("busy", 11)  # a failed change keeps the old
        assert await sys.change_code_many([pid], me, "1", None) == []
        assert await sys.get_state(pid) == ("BUSY", {"n": 11, "seen": [], "from": "1"})
        sys.resume_many([pid])
        assert await gen_statem.call(pid, "get") == (
            "v2",
            "IDLE",
            {"n": 16, "seen": [5], "from": "1"},
        )
        # and down again: the v1 code, the v2 code_change with ("down", vsn)
        await sys.suspend(pid)
        await sys.change_code(pid, me, ("down", "2"), None)
        code_dir.write("sm", V1)
        node.code.purge(me)
        node.code.load(me)
        await sys.resume(pid)
        assert await gen_statem.call(pid, "get") == ("v1", "idle", 16)


async def test_code_change_with_runs_on_a_copy_for_the_preflight(code_dir: CodeDir) -> None:
    me = code_dir.name("sm")
    code_dir.write("sm", V1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me, 3)
        code_dir.write("sm", V2)
        prepared = node.code.prepare(me)
        scratch: Any = type(sys)(me)
        exec(prepared.code, scratch.__dict__)
        s = node.processes[pid].sys
        assert s.code_change_with(scratch, me, "1", ("idle", 3), None) == (
            "IDLE",
            {"n": 3, "seen": [], "from": "1"},
        )
        with pytest.raises(ValueError, match="deliberate"):
            s.code_change_with(scratch, me, "1", ("idle", 3), "boom")
        assert await sys.get_state(pid) == ("idle", 3)  # the live state was not touched


async def test_parent_exit_runs_terminate_when_trapping(code_dir: CodeDir) -> None:
    me = code_dir.name("trap")
    code_dir.write(
        "trap",
        """
def callback_mode():
    return "handle_event_function"
def init(box):
    from relhandler.runtime import trap_exit
    trap_exit(True)
    return ("ok", "s", box)
def handle_event(t, c, s, d):
    return "keep_state_and_data"
def terminate(reason, s, box):
    box.append(reason)
""",
    )
    box: list[Any] = []
    async with Node() as node:
        node.code.set_path([code_dir.root])
        started: list[Pid] = []

        async def parent() -> None:
            started.append(await gen_statem.start_link(me, box))
            from relhandler.runtime import Exit

            raise Exit("shutdown")

        node.spawn(parent)
        await until(lambda: bool(started) and started[0] not in node.processes)
        assert box == ["shutdown"]


CHAIN = """
import asyncio

def callback_mode():
    return "handle_event_function"

def init(args):
    return ("ok", "s", [])

async def handle_event(etype, content, state, log):
    if etype == "cast":
        return ("keep_state", log + ["cast"],
                [("next_event", "internal", i) for i in range(3)])
    await asyncio.sleep(0.01)
    return ("keep_state", log + [content])
"""


async def test_suspend_waits_until_no_event_is_queued_inside(code_dir: CodeDir) -> None:
    me = code_dir.name("chain")
    code_dir.write("chain", CHAIN)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me)
        gen_statem.cast(pid, "go")
        await until(lambda: node.processes[pid].sys.in_callback)
        r = await sys.suspend_many([pid], timeout=5)
        assert r.suspended == (pid,)
        # the internal events of the transition ran before the suspend took effect (OTP)
        assert await sys.get_state(pid) == ("s", ["cast", 0, 1, 2])
        # replace_state maps (state, data), as OTP's sys does
        assert await sys.replace_state(pid, lambda sd: ("t", sd[1] + ["x"])) == (
            "t",
            ["cast", 0, 1, 2, "x"],
        )
        await sys.resume(pid)
        gen_statem.cast(pid, "again")
        await settle(node, pid, wait=0.05)
        assert (await sys.get_state(pid))[0] == "t"


async def test_stop_of_a_suspended_machine_runs_terminate(
    code_dir: CodeDir, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "term.log"
    monkeypatch.setenv("STATEM_TERMINATE_LOG", str(log))
    me = code_dir.name("lock")
    code_dir.write("lock", LOCK)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_statem.start(me, "7")
        await sys.suspend(pid)
        gen_statem.cast(pid, "0")  # queued behind the suspend: never handled
        await gen_statem.stop(pid, "bye")
        assert pid not in node.processes
    assert log.read_text().splitlines() == ['["\'bye\'", "locked", {"code": "7", "tries": 0}]']
