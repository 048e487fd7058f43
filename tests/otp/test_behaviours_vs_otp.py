"""Differential test: our gen_statem and gen_event against OTP's, scenario by scenario.

The same machines and handlers (tests/otp/behaviours/*.erl mirror the Python modules) are
driven through the same calls in ``erl`` and on a node; the event logs, handler lists and
``sys:get_state`` results must be equal. Timers of equal length fire in no promised order
(in OTP neither), so timeout logs are compared as multisets.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from relhandler.runtime import (
    Exit,
    Node,
    Pid,
    ReceiveTimeout,
    gen_event,
    gen_statem,
    receive,
    self_pid,
    send,
    sys,
)
from tests.node.conftest import CodeDir, until
from tests.node.test_gen_statem import ORDER, TIMEOUTS
from tests.otp.otp_rc import from_json

pytestmark = pytest.mark.otp

HERE = Path(__file__).parent / "behaviours"

TMO_CASES = {
    "ev": ["ev"],
    "all3_rep": ["all3", "rep"],
    "all3_chg": ["all3", "chg"],
    "zero_and_next": ["zero_and_next"],
    "st0_ev0": ["st0_ev0"],
    "ev_then_inf": ["ev_then_inf"],
    "upd_idle": ["upd_idle"],
    "upd_running": ["upd_running"],
    "gen_cancel": ["gen_cancel"],
    "st_inf": ["st_inf"],
}

# beh_h.erl, line for line
HANDLER = """
LOG = []

def init(a):
    if a == "bad":
        return ("error", "nope")
    if a == "crash":
        raise RuntimeError("boom")
    return ("ok", a)

def handle_event(e, s):
    if e == "badret":
        return "weird"
    if e == "crash":
        raise RuntimeError("kaboom")
    if e == "rm":
        return "remove_handler"
    if e == "swap" and s == "mid":
        return ("swap_handler", "bye", s, ("{me}", "new"), "hi")
    LOG.append(("event", s, e))
    return ("ok", s)

def handle_call(q, s):
    if q == "get":
        return ("ok", s, s)
    if q == "rm":
        return ("remove_handler", "removed")
    return ("ok", "?", s)

def handle_info(i, s):
    LOG.append(("info", s, i))
    return ("ok", s)

def terminate(a, s):
    LOG.append(("terminate", a, s))
    return ("terminated", s)
"""


@pytest.fixture(scope="module")
def otp() -> dict[str, Any]:
    erl = shutil.which("erl")
    if erl is None or shutil.which("erlc") is None:
        pytest.skip("Erlang/OTP (erl, erlc) is not installed")
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            ["erlc", "-o", d, *map(str, sorted(HERE.glob("*.erl")))],
            check=True,
            capture_output=True,
        )
        out = subprocess.run(
            [erl, "-noshell", "-pa", d, "-run", "beh_driver", "main"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["id"]: from_json(r["result"]) for r in rows}


def renamed(x: Any, ours: str, theirs: str) -> Any:
    if isinstance(x, tuple):
        return tuple(renamed(e, ours, theirs) for e in x)
    if isinstance(x, list):
        return [renamed(e, ours, theirs) for e in x]
    return theirs if x == ours else x


async def quiet(node: Node, pid: Any) -> None:
    def idle() -> bool:
        p = node.processes.get(pid)
        return p is not None and p._waiter is not None and not p.mailbox and not p.sys.queue

    await until(idle)


def test_event_order_with_postpone_enter_and_zero_timeouts(
    otp: dict[str, Any], tmp_path: Path
) -> None:
    async def run() -> Any:
        cd = CodeDir(tmp_path)
        me = cd.name("order")
        cd.write("order", ORDER)
        async with Node() as node:
            node.code.set_path([cd.root])
            pid = await gen_statem.start(me)
            await sys.suspend(pid)
            gen_statem.cast(pid, "t0")
            gen_statem.cast(pid, "m1")
            send(pid, "i1")
            await sys.resume(pid)
            await quiet(node, pid)
            await sys.suspend(pid)
            for m in ("pp", "go", "after1"):
                gen_statem.cast(pid, m)
            await sys.resume(pid)
            await quiet(node, pid)
            return await sys.get_state(pid)

    state, log = asyncio.run(run())
    assert (state, log) == otp["order"]


@pytest.mark.parametrize("case", sorted(TMO_CASES))
def test_timeouts(otp: dict[str, Any], tmp_path: Path, case: str) -> None:
    async def run() -> Any:
        cd = CodeDir(tmp_path)
        me = cd.name("tmo")
        cd.write("tmo", TIMEOUTS)
        async with Node() as node:
            node.code.set_path([cd.root])
            pid = await gen_statem.start(me)
            for c in TMO_CASES[case]:
                gen_statem.cast(pid, c)
            p = node.processes[pid]
            # handled, and every timer fired or was cancelled
            await until(lambda: p._waiter is not None and not p.mailbox and not p.sys.timers)
            await quiet(node, pid)
            return (await sys.get_state(pid))[1]

    log = asyncio.run(run())
    assert sorted(map(repr, log)) == sorted(map(repr, otp[case]))


def test_handlers_order_duplicates_crashes_and_misses(otp: dict[str, Any], tmp_path: Path) -> None:
    async def run() -> Any:
        cd = CodeDir(tmp_path)
        h = cd.name("h")
        cd.write("h", HANDLER.replace("{me}", h))
        async with Node() as node:
            node.code.set_path([cd.root])
            m = await gen_event.start()
            adds = [
                await gen_event.add_handler(m, (h, 1), "one"),
                await gen_event.add_handler(m, (h, 2), "two"),
                await gen_event.add_handler(m, h, "plain"),
                await gen_event.add_handler(m, h, "plain2"),
                await gen_event.add_handler(m, (h, 3), "bad"),
            ]
            which = await gen_event.which_handlers(m)
            state = await sys.get_state(m)
            await gen_event.sync_notify(m, "hello")
            send(m, "inf")
            await gen_event.sync_notify(m, "badret")
            after = await gen_event.which_handlers(m)
            deleted = await gen_event.delete_handler(m, "nothere", "x")
            called = await gen_event.call(m, "nothere", "q")
            log = list(node.code.current(h).LOG)
            return renamed((adds, which, state, log, after, deleted, called), h, "beh_h")

    assert asyncio.run(run()) == otp["handlers"]


def test_swaps_from_a_callback_and_from_the_api(otp: dict[str, Any], tmp_path: Path) -> None:
    async def run() -> Any:
        cd = CodeDir(tmp_path)
        h = cd.name("h")
        cd.write("h", HANDLER.replace("{me}", h))
        async with Node() as node:
            node.code.set_path([cd.root])
            m = await gen_event.start()
            for i, s in ((1, "first"), (2, "mid"), (3, "last")):
                await gen_event.add_handler(m, (h, i), s)
            await gen_event.sync_notify(m, "swap")
            s1 = await sys.get_state(m)
            r = await gen_event.swap_handler(m, ((h, 1), "x"), ((h, 9), "y"))
            s2 = await sys.get_state(m)
            r2 = await gen_event.swap_handler(m, ("nothere", "a1"), ((h, 7), "a2"))
            s3 = await sys.get_state(m)
            return renamed((s1, r, s2, r2, s3), h, "beh_h")

    assert asyncio.run(run()) == otp["swaps"]


def no_pids(x: Any) -> Any:
    if isinstance(x, Pid):
        return "PID"
    if isinstance(x, tuple):
        return tuple(no_pids(e) for e in x)
    if isinstance(x, list):
        return [no_pids(e) for e in x]
    return x


def test_supervised_handlers(otp: dict[str, Any], tmp_path: Path) -> None:
    async def run() -> Any:
        cd = CodeDir(tmp_path)
        h = cd.name("h")
        cd.write("h", HANDLER.replace("{me}", h))
        async with Node() as node:
            node.code.set_path([cd.root])
            out: asyncio.Future[Any] = node.loop.create_future()

            async def driver() -> None:
                me = self_pid()
                m = await gen_event.start()
                for i, s in ((1, "one"), (2, "two"), (3, "three")):
                    assert await gen_event.add_sup_handler(m, (h, i), s) == "ok"
                d = await gen_event.delete_handler(m, (h, 1), "x")
                await gen_event.sync_notify(m, "badret")
                assert await gen_event.add_sup_handler(m, (h, 4), "four") == "ok"
                assert await gen_event.add_handler(m, (h, 5), "five") == "ok"
                await gen_event.sync_notify(m, "rm")
                assert await gen_event.add_sup_handler(m, (h, 6), "six") == "ok"
                s1 = await gen_event.swap_handler(m, ((h, 6), "a"), ((h, 7), "b"))
                s2 = await gen_event.swap_sup_handler(m, ((h, 7), "a"), ((h, 8), "c"))

                async def supervisor() -> None:
                    assert await gen_event.add_sup_handler(m, (h, 9), "nine") == "ok"
                    send(me, "added")
                    await receive(match=lambda x: x == "die")
                    raise Exit("bye")

                p = node.spawn(supervisor)
                await receive(match=lambda x: x == "added")
                send(p, "die")
                await asyncio.sleep(0.05)
                w = await gen_event.which_handlers(m)
                await gen_event.stop(m)
                msgs = []
                while True:
                    try:
                        msgs.append(await receive(timeout=0.05))
                    except ReceiveTimeout:
                        break
                log = list(node.code.current(h).LOG)
                out.set_result((d, s1, s2, w, msgs, log))

            node.spawn(driver)
            return no_pids(renamed(await out, h, "beh_h"))

    assert asyncio.run(run()) == otp["sups"]
