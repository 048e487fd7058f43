"""Tasks belong to their process (issue 14, item 3): an asyncio task created inside a
process is its child — it is not the process, cannot take its mailbox, and ends with it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relhandler.errors import NotAProcessError
from relhandler.runtime import Node, ReceiveTimeout, gen_server, receive, self_pid, send

from .conftest import CodeDir, until


async def test_self_pid_in_a_child_task_raises_naming_the_owner() -> None:
    async with Node() as node:
        seen: dict[str, Any] = {}

        async def body() -> None:
            seen["pid"] = self_pid()

            async def child() -> None:
                try:
                    self_pid()
                except NotAProcessError as e:
                    seen["error"] = str(e)

            await asyncio.create_task(child())
            seen["after"] = self_pid()  # the process itself is unaffected

        pid = node.spawn(body)
        await until(lambda: "after" in seen)
        assert seen["pid"] == pid == seen["after"]
        assert f"task that process {pid} created" in seen["error"]


async def test_a_child_task_cannot_take_the_mailbox() -> None:
    # before: two waiters on one mailbox, and one of them hung forever
    async with Node() as node:
        got: list[Any] = []
        errors: list[str] = []

        async def thief() -> None:
            try:
                got.append(("task", await receive()))
            except NotAProcessError as e:
                errors.append(e.code)

        async def body() -> None:
            t = asyncio.create_task(thief())
            await asyncio.sleep(0)
            got.append(("proc", await receive()))
            got.append(("proc", await receive()))
            await t

        pid = node.spawn(body)
        await until(lambda: bool(errors))
        node.send(pid, "one")
        node.send(pid, "two")
        await until(lambda: len(got) == 2)
        assert got == [("proc", "one"), ("proc", "two")]
        assert errors == ["not_a_process"]


async def test_child_and_grandchild_tasks_are_cancelled_when_the_process_is_killed() -> None:
    async with Node() as node:
        states: dict[str, str] = {}

        async def forever(name: str, spawn_more: bool) -> None:
            if spawn_more:
                asyncio.create_task(forever("grandchild", False))  # noqa: RUF006 (the process holds it)
            states[name] = "running"
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                states[name] = "cancelled"
                raise

        async def body() -> None:
            asyncio.create_task(forever("child", True))  # noqa: RUF006 (the process holds it)
            await receive()

        pid = node.spawn(body)
        await until(lambda: len(states) == 2)
        p = node.processes[pid]
        assert p.tasks is not None and len(p.tasks) == 2
        node._kill(p, "kill")
        await until(lambda: set(states.values()) == {"cancelled"})


async def test_tasks_end_with_a_normal_exit_too_and_finished_ones_are_forgotten() -> None:
    async with Node() as node:
        cancelled: list[bool] = []

        async def short() -> int:
            return 1

        async def long() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        async def body() -> None:
            assert await asyncio.create_task(short()) == 1
            p = node.processes[self_pid()]
            asyncio.create_task(long())  # noqa: RUF006 (the process holds it)
            await asyncio.sleep(0)
            assert p.tasks is not None and len(p.tasks) == 1  # the finished one is gone

        node.spawn(body)
        await until(lambda: cancelled == [True])


ECHO = """
def init(args):
    return ("ok", None)

def handle_call(req, from_, state):
    return ("reply", "pong", state)
"""


async def test_a_task_can_call_and_send_and_outside_tasks_are_untouched(
    code_dir: CodeDir,
) -> None:
    code_dir.write("echo", ECHO)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        srv = await gen_server.start(code_dir.name("echo"), None)
        out: list[Any] = []

        async def body() -> None:
            me = self_pid()

            async def child() -> None:
                send(me, ("from task", await gen_server.call(srv, "ping")))

            asyncio.create_task(child())  # noqa: RUF006 (the process holds it)
            out.append(await receive(timeout=2))

        node.spawn(body)
        await until(lambda: bool(out))
        assert out == [("from task", "pong")]
        # a task made outside every process belongs to nobody and runs on
        t = asyncio.create_task(asyncio.sleep(0.01, "done"))
        assert await t == "done"


async def test_a_task_created_after_its_process_exited_is_cancelled() -> None:
    async with Node() as node:
        ctxs: list[Any] = []

        async def body() -> None:
            import contextvars

            ctxs.append(contextvars.copy_context())

        node.spawn(body)
        await until(lambda: bool(ctxs))
        await asyncio.sleep(0.01)
        t = asyncio.get_running_loop().create_task(asyncio.sleep(1), context=ctxs[0])
        with pytest.raises(asyncio.CancelledError):
            await t


GS_V1 = """
import asyncio
from relhandler.runtime import self_pid

VERSION = {v}
beats = []

async def beat():
    while True:
        beats.append(VERSION)
        await asyncio.sleep(0.005)

def init(args):
    return ("ok", asyncio.create_task(beat()))

def handle_call(req, from_, state):
    return ("reply", VERSION, state)

def code_change(old, state, extra):
    return ("ok", state)
"""


async def test_a_task_running_old_code_makes_its_process_an_old_code_user(
    code_dir: CodeDir,
) -> None:
    # before: the server idled in its loop, so the purge spared it, and its task kept
    # running v1 after v1 was purged
    me = code_dir.name("beater")
    code_dir.write("beater", GS_V1.format(v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, None)
        v1 = node.code.current(me)
        await until(lambda: len(v1.beats) > 2)
        code_dir.write("beater", GS_V1.format(v=2))
        node.code.load(me)
        assert await gen_server.call(pid, "vsn") == 2  # the server itself is in v2
        assert node.code.old_code_users(me) == [pid]  # its task is still in v1
        assert node.code.check_process_code(pid, me)
        assert node.code.soft_purge(me) is False
        task = next(iter(node.processes[pid].tasks or ()))
        assert node.code.purge(me) is True
        await until(lambda: pid not in node.processes and task.done())
        assert task.cancelled()
        n = len(v1.beats)
        await asyncio.sleep(0.03)
        assert len(v1.beats) == n  # no v1 code runs after the purge


async def test_receive_timeout_still_works_in_the_process() -> None:
    async with Node() as node:
        out: list[str] = []

        async def body() -> None:
            try:
                await receive(timeout=0.01)
            except ReceiveTimeout:
                out.append("timeout")

        node.spawn(body)
        await until(lambda: out == ["timeout"])


async def _eof_server() -> tuple[asyncio.Server, int, asyncio.Queue[bytes]]:
    """A plain asyncio server (outside every process) that reports what each client sent
    until EOF: b"<data>|EOF"."""
    seen: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read()  # until EOF
        await seen.put(data + b"|EOF")
        w.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1], seen


async def test_a_connection_opened_in_a_process_closes_when_it_is_killed() -> None:
    async with Node() as node:
        srv, port, seen = await _eof_server()

        sent: list[bool] = []

        async def body() -> None:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"hello")
            await w.drain()
            sent.append(True)
            await receive()  # holds the connection, never closes it

        pid = node.spawn(body)
        # killed once it wrote (the transport exists before the write: a kill then sent nothing)
        await until(lambda: bool(sent and node.processes[pid].transports))
        node._kill(node.processes[pid], "kill")
        assert await asyncio.wait_for(seen.get(), 5) == b"hello|EOF"
        srv.close()


async def test_a_connection_handed_to_another_process_follows_it() -> None:
    from relhandler.runtime import sockets
    from relhandler.runtime._kernel import transport_owner

    async with Node() as node:
        srv, port, seen = await _eof_server()
        conns: list[asyncio.StreamWriter] = []

        async def opener() -> None:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            conns.append(w)
            await receive()

        async def keeper() -> None:
            await receive()

        a = node.spawn(opener)
        b = node.spawn(keeper)
        await until(lambda: bool(conns) and transport_owner(conns[0].transport) is not None)
        assert transport_owner(conns[0].transport) is node.processes[a]
        sockets.adopt(conns[0], owner=b)
        node._kill(node.processes[a], "kill")
        await asyncio.sleep(0.05)
        assert seen.empty() and not conns[0].transport.is_closing()  # b owns it now
        node._kill(node.processes[b], "kill")
        assert await asyncio.wait_for(seen.get(), 5) == b"|EOF"
        srv.close()


async def test_forward_delivers_items_then_closed_and_respects_the_backlog() -> None:
    from relhandler.runtime import forward

    async with Node() as node:
        got: list[Any] = []
        gate = asyncio.Event()
        made = 0

        async def source() -> Any:
            nonlocal made
            for i in range(100):
                made += 1
                yield i

        async def failing() -> Any:
            yield "x"
            raise ValueError("source broke")

        async def body() -> None:
            forward(source(), "n", backlog=10)
            await gate.wait()  # takes nothing: the mailbox may only reach the backlog
            while True:
                m = await receive()
                got.append(m)
                if m[0] == "n_closed":
                    break
            forward(failing(), "f")
            got.append(await receive())
            got.append(await receive())

        pid = node.spawn(body)
        await until(lambda: len(node.processes[pid].mailbox) == 10)
        await asyncio.sleep(0.05)
        assert made <= 11 and len(node.processes[pid].mailbox) == 10
        gate.set()
        await until(lambda: len(got) == 103)
        assert got[:101] == [("n", i) for i in range(100)] + [("n_closed", None)]
        assert got[101] == ("f", "x")
        assert got[102][0] == "f_closed" and isinstance(got[102][1], ValueError)
