"""Inline calls: a call to an idle server runs ``handle_call`` on the caller's turn.

Each behaviour is checked with the inline path on and off: the two must not differ in
anything but how many trips through the event loop a call costs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relhandler.errors import CallExitError, NoProcError
from relhandler.runtime import Node, exit, gen_server, monitor, receive, sys

from .conftest import CodeDir, until

SRV = """
import asyncio
import contextvars
from relhandler.runtime import exit, gen_server, self_pid, send

CV = contextvars.ContextVar("cv", default="unset")
RAN = []

def init(args):
    return ("ok", {"n": 0, "timeouts": 0})

def handle_call(req, from_, state):
    if req == "who":
        return ("reply", self_pid(), state)
    if req == "incr":
        return ("reply", state["n"] + 1, {**state, "n": state["n"] + 1})
    if req == "crash":
        raise RuntimeError("crashed in handle_call")
    if req == "stop":
        return ("stop", "normal", "bye", state)
    if req == "with_timeout":
        return ("reply", "armed", state, 0.02)
    if req == "timeouts":
        return ("reply", state["timeouts"], state)
    if req == "later":
        return ("noreply", {**state, "waiting": from_})
    if req == "bad":
        return ("nonsense",)
    if req == "kill_caller":
        exit(from_.pid, "kill")
        return ("reply", "ok", state)
    if req == "reply_twice":
        gen_server.reply(from_, "first")
        return ("reply", "second", state)
    if req == "dispatch":
        RAN.append(req)
        return _rest(state)
    if req == "set_cv":
        CV.set("server")
        return ("reply", CV.get(), state)
    if req == "arm":
        return ("reply", "armed", state, 0.3)
    return ("reply", None, state)

async def _rest(state):
    await asyncio.sleep(0)
    return ("reply", "rest", state)

def handle_cast(msg, state):
    from relhandler.runtime import gen_server
    gen_server.reply(state["waiting"], msg)
    return ("noreply", state)

def handle_info(msg, state):
    if msg == "timeout":
        return ("noreply", {**state, "timeouts": state["timeouts"] + 1})
    return ("noreply", state)

def terminate(reason, state):
    send("inline_watch", ("terminated", repr(reason)))
"""

ASYNC_SRV = """
import asyncio

def init(args):
    return ("ok", None)

async def handle_call(req, from_, state):
    await asyncio.sleep(0)
    return ("reply", id(asyncio.current_task()), state)
"""


@pytest.fixture(params=[True, False], ids=["inline", "queued"])
def inline(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@contextlib.asynccontextmanager
async def _node(code_dir: CodeDir, inline: bool) -> AsyncIterator[tuple[Node, str]]:
    """An active node (closed at the end) with ``SRV`` on its code path."""
    async with Node() as node:
        node.inline_calls = inline
        node.code.set_path([code_dir.root])
        code_dir.write("srv", SRV)
        yield node, code_dir.name("srv")


async def _watch() -> None:
    from relhandler.runtime import register, self_pid

    register("inline_watch", self_pid())
    await asyncio.Event().wait()


async def test_callback_runs_as_the_server(code_dir: CodeDir, inline: bool) -> None:
    async with _node(code_dir, inline) as (_, me):
        pid = await gen_server.start(me)
        assert await gen_server.call(pid, "who") == pid
        assert [await gen_server.call(pid, "incr") for _ in range(3)] == [1, 2, 3]
        assert (await sys.get_state(pid))["n"] == 3


async def test_crash_in_handle_call_ends_the_server_not_the_caller(
    code_dir: CodeDir, inline: bool
) -> None:
    async with _node(code_dir, inline) as (node, me):
        node.spawn(_watch)
        await until(lambda: "inline_watch" in node.names)
        pid = await gen_server.start(me)
        watcher = node.processes[node.names["inline_watch"]]

        async def caller() -> None:
            ref = monitor(pid)
            with pytest.raises(CallExitError):
                await gen_server.call(pid, "crash")
            down = await receive(match=lambda m: m[0] == "DOWN" and m[1] == ref)
            assert isinstance(down[4], RuntimeError)

        c = node.spawn(caller)
        await until(lambda: c not in node.processes)
        assert pid not in node.processes
        assert list(watcher.mailbox) == [("terminated", "RuntimeError('crashed in handle_call')")]


async def test_stop_timeout_noreply_and_bad_return(code_dir: CodeDir, inline: bool) -> None:
    async with _node(code_dir, inline) as (node, me):
        pid = await gen_server.start(me)
        assert await gen_server.call(pid, "with_timeout") == "armed"
        await until(lambda: node.processes[pid].sys.state["timeouts"] == 1)
        later = asyncio.ensure_future(gen_server.call(pid, "later"))
        await asyncio.sleep(0.01)
        assert not later.done()
        gen_server.cast(pid, "answered")
        assert await later == "answered"
        assert await gen_server.call(pid, "stop") == "bye"
        await until(lambda: pid not in node.processes)

        pid2 = await gen_server.start(me)
        with pytest.raises(CallExitError):
            await gen_server.call(pid2, "bad")
        assert pid2 not in node.processes


async def test_async_handle_call_runs_in_the_servers_own_task(
    code_dir: CodeDir, inline: bool
) -> None:
    async with _node(code_dir, inline) as (node, _):
        code_dir.write("asrv", ASYNC_SRV)
        pid = await gen_server.start(code_dir.name("asrv"))
        task = node.processes[pid].task
        assert await gen_server.call(pid, "x") == id(task)


async def test_a_crash_lands_before_a_suspend_that_follows_it(code_dir: CodeDir) -> None:
    """The server acts on an inline outcome before it honours a suspend: an upgrade never
    finds a server whose callback has crashed but which has not terminated yet. (Queued, the
    request would simply wait in the mailbox behind the suspend, as in OTP.)"""
    async with _node(code_dir, True) as (node, me):
        pid = await gen_server.start(me)
        call = asyncio.ensure_future(gen_server.call(pid, "crash"))
        await asyncio.sleep(0)  # the call runs handle_call inline; the server has not woken
        assert node.processes[pid].sys.pending is not None
        r = await sys.suspend_many([pid], timeout=1)
        assert r.suspended == () and r.skipped == ((pid, "noproc"),)
        with pytest.raises(CallExitError):
            await call


async def test_an_idle_server_answers_without_a_trip_through_the_loop(
    code_dir: CodeDir, inline: bool
) -> None:
    async with _node(code_dir, inline) as (_, me):
        pid = await gen_server.start(me)
        ticks: list[int] = []
        asyncio.get_running_loop().call_soon(ticks.append, 1)
        await gen_server.call(pid, "incr")
        assert ticks == ([] if inline else [1])


async def test_a_calling_loop_still_lets_others_run(code_dir: CodeDir, inline: bool) -> None:
    """Inline calls yield to the loop every ``INLINE_BUDGET`` calls (like BEAM's reductions),
    so a process that only makes calls does not starve the node."""
    async with _node(code_dir, inline) as (node, me):
        pid = await gen_server.start(me)
        ticks = [0]

        async def ticker() -> None:
            while True:
                ticks[0] += 1
                await asyncio.sleep(0)

        node.spawn(ticker)
        await asyncio.sleep(0)
        n = 20 * Node.INLINE_BUDGET
        for _ in range(n):
            await gen_server.call(pid, "incr")
        assert ticks[0] >= 10
        assert (await sys.get_state(pid))["n"] == n


async def test_a_killed_server_does_not_answer(code_dir: CodeDir, inline: bool) -> None:
    """An exit signal sent before the call wins, though the server has not run yet."""
    async with _node(code_dir, inline) as (node, me):
        pid = await gen_server.start(me)
        out: list[Any] = []

        async def killer() -> None:
            exit(pid, "kill")
            try:
                out.append(await gen_server.call(pid, "incr"))
            except (CallExitError, NoProcError) as e:
                out.append(type(e).__name__)

        node.spawn(killer)
        await until(lambda: bool(out))
        assert out in (["CallExitError"], ["NoProcError"])
        assert pid not in node.processes


async def test_handle_call_killing_its_caller(code_dir: CodeDir, inline: bool) -> None:
    async with _node(code_dir, inline) as (node, me):
        pid = await gen_server.start(me)
        after: list[str] = []

        async def caller() -> None:
            await gen_server.call(pid, "kill_caller")
            after.append("the caller went on")

        c = node.spawn(caller)
        await until(lambda: c not in node.processes)
        assert after == [] and pid in node.processes
        assert await gen_server.call(pid, "incr") == 1


async def test_an_earlier_reply_wins(code_dir: CodeDir, inline: bool) -> None:
    async with _node(code_dir, inline) as (_, me):
        pid = await gen_server.start(me)
        assert await gen_server.call(pid, "reply_twice") == "first"


async def test_sync_handle_call_returning_a_coroutine_runs_once(
    code_dir: CodeDir, inline: bool
) -> None:
    async with _node(code_dir, inline) as (node, me):
        pid = await gen_server.start(me)
        assert await gen_server.call(pid, "dispatch") == "rest"
        assert node.code.current(me).RAN == ["dispatch"]


async def test_context_variables_stay_the_servers(code_dir: CodeDir, inline: bool) -> None:
    async with _node(code_dir, inline) as (node, me):
        pid = await gen_server.start(me)
        assert await gen_server.call(pid, "set_cv") == "server"
        assert node.code.current(me).CV.get() == "unset"  # not leaked into the caller
        assert node.processes[pid].ctx.run(node.code.current(me).CV.get) == "server"


async def test_resume_restarts_a_timeout_rather_than_firing_it(
    code_dir: CodeDir, inline: bool
) -> None:
    async with _node(code_dir, inline) as (node, me):
        pid = await gen_server.start(me)
        assert await gen_server.call(pid, "arm") == "armed"  # a 300 ms timeout
        await asyncio.sleep(0.01)
        assert (await sys.suspend_many([pid])).suspended == (pid,)
        sys.resume_many([pid])
        await asyncio.sleep(0.05)
        assert node.processes[pid].sys.state["timeouts"] == 0
        await until(lambda: node.processes[pid].sys.state["timeouts"] == 1)
