"""``noreply`` + ``gen_server.spawn_reply``: slow work off the server (issue 14, item 6)."""

from __future__ import annotations

import asyncio
import time

import pytest

from relhandler.errors import CallExitError, NotAProcessError
from relhandler.runtime import Node, gen_server, sys

from .conftest import CodeDir, until

SLOW = """
import asyncio
from relhandler.runtime import gen_server

VERSION = {v}

async def backend(x, delay):
    await asyncio.sleep(delay)
    if x == "bad":
        raise ValueError("backend refused " + x)
    return ("backend", x, VERSION)

def init(args):
    if args == "trap":
        from relhandler.runtime import trap_exit
        trap_exit(True)
    return ("ok", {{"n": 0, "infos": []}})

def handle_info(msg, state):
    return ("noreply", {{**state, "infos": state["infos"] + [msg]}})

def handle_call(req, from_, state):
    if req[0] == "slow":
        gen_server.spawn_reply(from_, backend, req[1], req[2])
        return ("noreply", state)
    if req == "fast":
        return ("reply", ("fast", VERSION, state["n"]), {{**state, "n": state["n"] + 1}})
    if req == "infos":
        return ("reply", state["infos"], state)
    if req == "workers":
        from relhandler.runtime import current_node, self_pid
        return ("reply", sorted(current_node().processes[self_pid()].links), state)

def code_change(old, state, extra):
    return ("ok", {{**state, "migrated": True}})
"""


async def test_a_slow_backend_does_not_delay_other_callers(code_dir: CodeDir) -> None:
    me = code_dir.name("slow")
    code_dir.write("slow", SLOW.format(v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, None)
        t0 = time.monotonic()
        slow = asyncio.ensure_future(gen_server.call(pid, ("slow", "a", 0.5)))
        await asyncio.sleep(0.01)
        worst = 0.0
        for _ in range(20):
            t = time.monotonic()
            assert (await gen_server.call(pid, "fast"))[0] == "fast"
            worst = max(worst, time.monotonic() - t)
            await asyncio.sleep(0.005)
        assert not slow.done()
        assert worst < 0.1  # a blocking handler would have made the first one wait 0.5 s
        assert await slow == ("backend", "a", 1)
        assert time.monotonic() - t0 >= 0.5


async def test_the_backend_error_is_raised_in_the_caller_and_the_server_lives(
    code_dir: CodeDir,
) -> None:
    me = code_dir.name("slow")
    code_dir.write("slow", SLOW.format(v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, None)
        with pytest.raises(ValueError, match="backend refused bad"):
            await gen_server.call(pid, ("slow", "bad", 0.01))
        assert (await gen_server.call(pid, "fast"))[0] == "fast"
        await until(lambda: len(node.processes) == 1)  # the worker has exited


async def test_the_server_can_be_suspended_and_upgraded_while_the_work_runs(
    code_dir: CodeDir,
) -> None:
    me = code_dir.name("slow")
    code_dir.write("slow", SLOW.format(v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, None)
        slow = asyncio.ensure_future(gen_server.call(pid, ("slow", "a", 0.5)))
        await asyncio.sleep(0.01)
        t = time.monotonic()
        await sys.suspend(pid, timeout=0.2)
        code_dir.write("slow", SLOW.format(v=2))
        node.code.load(me)
        await sys.change_code(pid, me, 1, None, timeout=0.2)
        await sys.resume(pid)
        assert time.monotonic() - t < 0.2
        assert await gen_server.call(pid, "fast") == ("fast", 2, 0)
        assert (await sys.get_state(pid))["migrated"] is True
        # the worker still runs the v1 backend it was started with: old code in use
        assert node.code.soft_purge(me) is False
        assert await slow == ("backend", "a", 1)
        await until(lambda: node.code.soft_purge(me))


async def test_the_worker_is_linked_and_dies_with_its_server(code_dir: CodeDir) -> None:
    me = code_dir.name("slow")
    code_dir.write("slow", SLOW.format(v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, None)
        slow = asyncio.ensure_future(gen_server.call(pid, ("slow", "a", 30)))
        await asyncio.sleep(0.01)
        (worker,) = await gen_server.call(pid, "workers")
        assert node.processes[worker].initial_call.startswith("spawn_reply:")
        node._kill(node.processes[pid], "boom")
        with pytest.raises(CallExitError):
            await slow
        await until(lambda: worker not in node.processes)


async def test_spawn_reply_outside_the_server_is_refused() -> None:
    async with Node():
        fut = asyncio.get_running_loop().create_future()
        with pytest.raises(NotAProcessError, match="spawn_reply"):
            gen_server.spawn_reply(gen_server.From(None, fut), asyncio.sleep, 0)


async def test_a_server_that_traps_exits_gets_each_workers_normal_exit(code_dir: CodeDir) -> None:
    # OTP's rule for a link: docs/runtime.md, "Slow work"; a server that does not trap
    # exits gets nothing
    me = code_dir.name("slow")
    code_dir.write("slow", SLOW.format(v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        for args, trapping in ((None, False), ("trap", True)):
            pid = await gen_server.start(me, args)
            assert await gen_server.call(pid, ("slow", "a", 0)) == ("backend", "a", 1)
            with pytest.raises(ValueError, match="backend refused"):
                await gen_server.call(pid, ("slow", "bad", 0))
            await until(lambda pid=pid: len(node.processes[pid].links) == 0)
            infos = await gen_server.call(pid, "infos")
            assert [(m[0], m[2]) for m in infos] == ([("EXIT", "normal")] * 2 if trapping else [])
