"""Active sockets like Erlang's (issue 14, item 5): modes, framings, flow control and the
owner link, over real TCP on loopback and real Unix sockets."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relhandler.errors import SocketError
from relhandler.runtime import Node, Pid, receive, sockets

from .conftest import CodeDir, until


class Peer:
    """The far end: a plain asyncio server outside every process (one client)."""

    def __init__(self) -> None:
        self.conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.server: asyncio.Server | None = None

    async def on_connect(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await self.conns.put((r, w))

    async def next(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.conns.get(), 5)


@contextlib.asynccontextmanager
async def tcp_peer() -> AsyncIterator[tuple[Peer, int]]:
    peer = Peer()
    peer.server = await asyncio.start_server(peer.on_connect, "127.0.0.1", 0)
    try:
        yield peer, peer.server.sockets[0].getsockname()[1]
    finally:
        peer.server.close()


class Owner:
    """A raw process that owns one socket and records every message it receives."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.got: list[Any] = []
        self.sock: sockets.Socket | None = None
        self.pid: Pid | None = None

    def start(self, opener: Any) -> None:
        async def body() -> None:
            self.sock = await opener()
            while True:
                self.got.append(await receive())

        self.pid = self.node.spawn(body)

    def data(self) -> list[bytes]:
        return [m[2] for m in self.got if m[0] == "tcp"]

    def tags(self) -> list[str]:
        return [m[0] for m in self.got]


async def _pair(
    node: Node, port: int, peer: Peer, **opts: Any
) -> tuple[Owner, asyncio.StreamReader, asyncio.StreamWriter]:
    o = Owner(node)
    o.start(lambda: sockets.connect("127.0.0.1", port, **opts))
    r, w = await peer.next()
    await until(lambda: o.sock is not None)
    return o, r, w


async def test_active_true_lines_then_closed() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, _r, w = await _pair(node, port, peer)
        w.write(b"one\ntwo\nthr")
        await w.drain()
        w.write(b"ee\nlast")
        w.close()
        await until(lambda: "tcp_closed" in o.tags())
        assert o.data() == [b"one\n", b"two\n", b"three\n", b"last"]
        assert o.got[-1] == ("tcp_closed", o.sock)
        assert all(m[1] is o.sock for m in o.got)


async def test_active_once_delivers_one_frame_per_rearm() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, _r, w = await _pair(node, port, peer, active="once")
        w.write(b"a\nb\nc\n")
        await w.drain()
        await until(lambda: len(o.got) == 1)
        await asyncio.sleep(0.05)
        assert o.data() == [b"a\n"]  # passive now: nothing more
        assert o.sock is not None and o.sock.active is False
        o.sock.setopts(active="once")
        await until(lambda: len(o.got) == 2)
        await asyncio.sleep(0.05)
        assert o.data() == [b"a\n", b"b\n"]


async def test_active_n_sends_tcp_passive_and_setopts_adds() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, _r, w = await _pair(node, port, peer, active=2)
        w.write(b"".join(b"%d\n" % i for i in range(10)))
        await w.drain()
        await until(lambda: "tcp_passive" in o.tags())
        await asyncio.sleep(0.05)
        assert o.got == [("tcp", o.sock, b"0\n"), ("tcp", o.sock, b"1\n"), ("tcp_passive", o.sock)]
        assert o.sock is not None
        o.sock.setopts(active=3)
        await until(lambda: o.tags().count("tcp_passive") == 2)
        assert o.data() == [b"%d\n" % i for i in range(5)]
        # a count that ends at 0 or below: passive at once, with tcp_passive
        o.sock.setopts(active=True)
        await until(lambda: len(o.data()) == 10)
        o.sock.setopts(active=0)
        await until(lambda: o.tags().count("tcp_passive") == 3)


async def test_passive_recv_and_switching_framing_keeps_unread_bytes() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, _r, w = await _pair(node, port, peer, active=False)
        s = o.sock
        assert s is not None
        w.write(b"hello\n" + struct.pack(">H", 5) + b"world" + b"tail")
        await w.drain()
        assert await s.recv(timeout=2) == b"hello\n"
        s.setopts(packet=2)
        assert await s.recv(timeout=2) == b"world"
        s.setopts(packet="raw")
        assert await s.recv(timeout=2) == b"tail"
        with pytest.raises(TimeoutError):
            await s.recv(timeout=0.05)
        w.close()
        with pytest.raises(SocketError) as ei:
            await s.recv(timeout=2)
        assert ei.value.code == "closed"
        assert o.got == []  # a passive socket sends no messages


@pytest.mark.parametrize("n", [1, 2, 4])
async def test_length_prefixed_packets_both_ways(n: int) -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, r, w = await _pair(node, port, peer, packet=n)
        sizes = [0, 1, 200, 255] + ([300, 65535] if n > 1 else []) + ([70000] if n > 2 else [])
        payloads = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
        # sent in awkward pieces: headers and payloads split across writes
        stream = b"".join(len(p).to_bytes(n, "big") + p for p in payloads)
        for i in range(0, len(stream), 7777):
            w.write(stream[i : i + 7777])
            await w.drain()
        await until(lambda: len(o.data()) == len(payloads))
        assert o.data() == payloads
        assert o.sock is not None
        o.sock.send(b"reply")
        assert await asyncio.wait_for(r.readexactly(n + 5), 5) == (5).to_bytes(n, "big") + b"reply"
        if n < 4:
            with pytest.raises(SocketError) as ei:
                o.sock.send(b"x" * (1 << (8 * n)))
            assert ei.value.code == "emsgsize"


async def test_a_packet_over_packet_size_is_a_tcp_error() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, r, w = await _pair(node, port, peer, packet=4, packet_size=1000)
        w.write(struct.pack(">I", 5000) + b"x" * 100)
        await w.drain()
        await until(lambda: "tcp_closed" in o.tags())
        assert o.got == [("tcp_error", o.sock, "emsgsize"), ("tcp_closed", o.sock)]
        assert await asyncio.wait_for(r.read(), 5) == b""  # and the socket is closed


async def test_raw_framing_delivers_what_arrives() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, _r, w = await _pair(node, port, peer, packet="raw", chunk=1024)
        blob = bytes(range(256)) * 40  # 10 KiB
        w.write(blob)
        await w.drain()
        await until(lambda: sum(map(len, o.data())) == len(blob))
        assert b"".join(o.data()) == blob
        assert all(len(d) <= 1024 for d in o.data())


async def test_a_long_line_arrives_in_pieces_of_line_max() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, _r, w = await _pair(node, port, peer, line_max=100)
        w.write(b"x" * 250 + b"\n")
        await w.drain()
        await until(lambda: sum(map(len, o.data())) == 251)
        assert [len(d) for d in o.data()] == [100, 100, 51]


async def test_killed_owner_closes_the_socket_and_the_peer_sees_eof() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, r, w = await _pair(node, port, peer)
        w.write(b"hi\n")
        await until(lambda: len(o.data()) == 1)
        assert o.pid is not None
        node._kill(node.processes[o.pid], "kill")
        assert await asyncio.wait_for(r.read(), 5) == b""
        assert o.sock is not None and o.sock.closed
        assert o.sock._pump.done()


async def test_a_passive_socket_is_closed_by_its_owner_exit_too() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, r, _w = await _pair(node, port, peer, active=False)
        assert o.pid is not None
        node._kill(node.processes[o.pid], "shutdown")
        assert await asyncio.wait_for(r.read(), 5) == b""
        assert o.sock is not None
        await until(lambda: o.sock is not None and o.sock._pump.done())


async def test_suspended_owner_under_a_fast_sender_stays_bounded() -> None:
    # the owner is a process that takes no messages (as a suspended server): the socket
    # stops reading at `backlog` messages, asyncio's buffer fills, then the kernel's, and
    # the sender is blocked; after the owner drains, every line arrives, in order
    async with Node() as node, tcp_peer() as (peer, port):
        gate = asyncio.Event()
        got: list[bytes] = []
        holder: list[sockets.Socket] = []

        async def body() -> None:
            holder.append(await sockets.connect("127.0.0.1", port, backlog=50, chunk=4096))
            await gate.wait()  # "suspended": the mailbox only grows
            while True:
                m = await receive()
                if m[0] == "tcp_closed":
                    return
                got.append(m[2])

        pid = node.spawn(body)
        _r, w = await peer.next()
        total = 32_000  # 1 KiB lines: 32 MiB, more than loopback's kernel buffers hold
        sent = 0
        pad = b"." * 1000

        def line(i: int) -> bytes:
            return b"%08d %s\n" % (i, pad)

        async def sender() -> None:
            nonlocal sent
            for i in range(total):
                w.write(line(i))
                sent += 1
                await w.drain()
            w.close()

        st = asyncio.create_task(sender())
        await asyncio.sleep(1.0)
        p = node.processes[pid]
        sock = holder[0]
        assert len(p.mailbox) <= 50  # the bounded share
        assert len(sock._buf) <= 4096  # one chunk at most waits in the socket
        # asyncio's buffer: paused above 2 × limit, plus at most one transport read
        assert len(sock._reader._buffer) <= 2 * 2 * 4096 + 256 * 1024
        assert not st.done() and sent < total // 4  # the sender is held back
        gate.set()
        await asyncio.wait_for(st, 30)
        await until(lambda: pid not in node.processes, timeout=30)
        assert got == [line(i) for i in range(total)]


async def test_controlling_process_moves_messages_and_the_link() -> None:
    async with Node() as node, tcp_peer() as (peer, port):
        o, r, w = await _pair(node, port, peer)
        other: list[Any] = []

        async def keeper() -> None:
            while True:
                other.append(await receive())

        k = node.spawn(keeper)
        s = o.sock
        assert s is not None

        async def intruder() -> None:
            s.controlling_process(k)

        with pytest.raises(SocketError) as ei:
            await _run_in_process(node, intruder)
        assert ei.value.code == "not_owner"
        s.controlling_process(k)  # from outside every process: allowed
        w.write(b"to keeper\n")
        await until(lambda: len(other) == 1)
        assert other == [("tcp", s, b"to keeper\n")] and o.data() == []
        assert o.pid is not None
        node._kill(node.processes[o.pid], "kill")
        await asyncio.sleep(0.05)
        assert not s.closed  # the old owner's exit no longer closes it
        node._kill(node.processes[k], "kill")
        assert await asyncio.wait_for(r.read(), 5) == b""


async def _run_in_process(node: Node, fn: Any) -> None:
    fut = asyncio.get_running_loop().create_future()

    async def body() -> None:
        try:
            await fn()
            fut.set_result(None)
        except BaseException as e:
            fut.set_exception(e)

    node.spawn(body)
    await fut


async def test_unix_listener_accept_modes_and_owner_exit(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    async with Node() as node:
        got: list[Any] = []
        ready = asyncio.Event()

        async def server() -> None:
            lst = await sockets.listen_unix(path, packet=2)
            ready.set()
            s = await lst.accept(timeout=5)
            s.send(b"welcome")
            while True:
                m = await receive()
                got.append(m)
                if m[0] == "tcp":
                    s.send(m[2].upper())

        pid = node.spawn(server)
        await ready.wait()
        r, w = await asyncio.open_unix_connection(str(path))
        assert await asyncio.wait_for(r.readexactly(9), 5) == b"\x00\x07welcome"
        w.write(b"\x00\x03abc")
        assert await asyncio.wait_for(r.readexactly(5), 5) == b"\x00\x03ABC"
        node._kill(node.processes[pid], "kill")
        assert await asyncio.wait_for(r.read(), 5) == b""  # the accepted socket closed
        with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
            await asyncio.open_unix_connection(str(path))  # and the listener too
        assert [m[0] for m in got] == ["tcp"]


async def test_tcp_listener_and_bad_options() -> None:
    async with Node() as node:
        out: list[Any] = []

        async def server() -> None:
            lst = await sockets.listen("127.0.0.1", 0)
            out.append(lst.port)
            s = await lst.accept(timeout=5, active="once")
            out.append(await receive(timeout=5))
            out.append(s.active)

        node.spawn(server)
        await until(lambda: bool(out))
        _r, w = await asyncio.open_connection("127.0.0.1", out[0])
        w.write(b"x\ny\n")
        await until(lambda: len(out) == 3)
        assert out[1][0] == "tcp" and out[1][2] == b"x\n" and out[2] is False
        w.close()
        with pytest.raises(SocketError) as ei:
            await _run_in_process(node, lambda: sockets.connect("127.0.0.1", 1, packet=3))
        assert ei.value.code == "einval"


SERVER = """
from relhandler.runtime import sockets

def init(port):
    return ("ok", {"port": port, "sock": None, "lines": []})

async def handle_call(req, from_, state):
    if req == "connect":
        sock = await sockets.connect("127.0.0.1", state["port"], backlog=20, chunk=2048)
        return ("reply", "ok", {**state, "sock": sock})
    if req == "lines":
        return ("reply", list(state["lines"]), state)

def handle_info(msg, state):
    if msg[0] == "tcp":
        state["lines"].append(msg[2])
    return ("noreply", state)
"""


async def test_a_suspended_genserver_owner_stops_the_reads(code_dir: CodeDir) -> None:
    from relhandler.runtime import gen_server, sys

    code_dir.write("tcpsrv", SERVER)
    async with Node() as node, tcp_peer() as (peer, port):
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(code_dir.name("tcpsrv"), port)
        assert await gen_server.call(pid, "connect") == "ok"
        _r, w = await peer.next()
        await sys.suspend(pid)
        total = 16_000
        pad = b"-" * 1000

        async def sender() -> None:
            for i in range(total):
                w.write(b"%06d%s\n" % (i, pad))
                await w.drain()

        st = asyncio.create_task(sender())
        await asyncio.sleep(1.0)
        assert len(node.processes[pid].mailbox) <= 20
        assert not st.done()
        await sys.resume(pid)
        await asyncio.wait_for(st, 30)
        await until(lambda: len(node.processes[pid].sys.state["lines"]) == total, timeout=30)
        lines = await gen_server.call(pid, "lines")
        assert lines == [b"%06d%s\n" % (i, pad) for i in range(total)]
