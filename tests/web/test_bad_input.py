"""Malformed HTTP and websocket input against a real node: each gets the protocol's error
response or close code, and neither the node nor a bystander connection notices."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from wsproto.frame_protocol import FrameProtocol

from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
MAX_WS = 1048576  # the listeners' ws_max_size in tests/web/webproj.py
HEADER_TIMEOUT = 2.0


def _masked(opcode: int, payload: bytes) -> bytes:
    """A client frame with a reserved/unknown opcode (no library writes those)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def _unmasked_text(text: str) -> bytes:
    # a *server* frame protocol writes unmasked frames: a client must never send one
    return FrameProtocol(client=False, extensions=[]).send_data(text, fin=True)


def _huge_masked(n: int) -> bytes:
    return FrameProtocol(client=True, extensions=[]).send_data(b"x" * n, fin=True)


async def _read_status(reader: asyncio.StreamReader) -> int:
    """One response's status; its body (content-length framed) is read away."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:") and status != 101:
            await reader.readexactly(int(line.split(b":", 1)[1]))
    return status


async def _read_close_code(reader: asyncio.StreamReader) -> int:
    """Skip data frames until the server's close frame; its status code."""
    while True:
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(n)
        if b0 & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big")


@dataclass(frozen=True)
class Case:
    name: str
    listener: str  # "http" (Starlette) or "room" (websocket behaviour)
    upgrade: bool  # complete a websocket handshake first
    send: Callable[[asyncio.StreamWriter], Awaitable[None]]
    expect: tuple[str, int]  # ("status", http status) or ("close", websocket close code)


def _bytes(data: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def send(w: asyncio.StreamWriter) -> None:
        w.write(data)

    return send


async def _slowloris(w: asyncio.StreamWriter) -> None:
    w.write(b"GET / HTTP/1.1\r\nHost: t\r\n")
    for i in range(int(HEADER_TIMEOUT * 4)):  # one header byte every 0.5 s, never done
        await asyncio.sleep(0.5)
        if w.is_closing():
            return
        try:
            w.write(b"x-slow-%d: y\r\n" % i)
            await w.drain()
        except ConnectionError:
            return


BAD_LINE = b"NOT A REQUEST LINE\r\n\r\n"
BIG_HEADERS = b"GET / HTTP/1.1\r\nHost: t\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n"
# Content-Length says 5, then more bytes follow: they are the next "request", a bad one
LONG_BODY = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello, and more\r\n\r\n"

# a websocket handshake wsproto refuses: no key (400), a version it does not speak (426)
NO_KEY = UPGRADE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"")
VERSION_8 = UPGRADE.replace(b"Version: 13", b"Version: 8")

CASES = [
    Case("bad request line", "http", False, _bytes(BAD_LINE), ("status", 400)),
    Case("websocket handshake without a key", "http", False, _bytes(NO_KEY), ("status", 400)),
    Case("websocket version 8", "http", False, _bytes(VERSION_8), ("status", 426)),
    Case("behaviour: handshake without a key", "room", False, _bytes(NO_KEY), ("status", 400)),
    Case("behaviour: websocket version 8", "room", False, _bytes(VERSION_8), ("status", 426)),
    Case("oversized headers", "http", False, _bytes(BIG_HEADERS), ("status", 431)),
    Case("body longer than declared", "http", False, _bytes(LONG_BODY), ("status", 400)),
    Case("slowloris", "http", False, _slowloris, ("status", 408)),
    Case("unmasked client frame", "http", True, _bytes(_unmasked_text("hi")), ("close", 1002)),
    Case("bad opcode", "http", True, _bytes(_masked(0x3, b"hi")), ("close", 1002)),
    Case("oversized frame", "http", True, _bytes(_huge_masked(MAX_WS + 10)), ("close", 1009)),
    Case("behaviour: bad request line", "room", False, _bytes(BAD_LINE), ("status", 400)),
    Case("behaviour: oversized headers", "room", False, _bytes(BIG_HEADERS), ("status", 431)),
    Case(
        "behaviour: plain HTTP",
        "room",
        False,
        _bytes(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("status", 426),
    ),
    Case("behaviour: slowloris", "room", False, _slowloris, ("status", 408)),
    # a peer gone without a FIN: its websocket is pinged every ws_ping_interval (1 s here)
    Case("never answers a ping", "http", True, _bytes(b""), ("close", 1011)),
    Case("behaviour: never answers a ping", "room", True, _bytes(b""), ("close", 1011)),
    Case("behaviour: unmasked frame", "room", True, _bytes(_unmasked_text("hi")), ("close", 1002)),
    Case("behaviour: bad opcode", "room", True, _bytes(_masked(0xB, b"")), ("close", 1002)),
    Case(
        "behaviour: oversized frame",
        "room",
        True,
        _bytes(_huge_masked(MAX_WS + 10)),
        ("close", 1009),
    ),
]


async def _attack(port: int, case: Case) -> tuple[str, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    try:
        if case.upgrade:
            writer.write(UPGRADE)
            assert await _read_status(reader) == 101
        sender = asyncio.create_task(case.send(writer))
        try:
            if case.expect[0] == "close":
                got = ("close", await _read_close_code(reader))
            else:
                status = await _read_status(reader)
                if case.name.endswith("body longer than declared"):
                    assert status == 405  # the declared request itself is answered (GET only)
                    status = await _read_status(reader)
                got = ("status", status)
        finally:
            sender.cancel()
        # and then the server closes the connection
        rest = await asyncio.wait_for(reader.read(), 10)
        assert isinstance(rest, bytes)
        return got
    finally:
        writer.close()


async def test_bad_input_gets_protocol_errors_and_harms_nobody(
    webt_builds: Path, tmp_path: Path, nodes: list[NodeProc]
) -> None:
    root = tmp_path / "root"
    cli("deploy", str(webt_builds / "webt-1.0.0.tar.gz"), "--root", str(root), check=True)
    nodes.append(start_node(root))
    ports = json.loads(cli("rpc", "webt.app:ports", "[]", "--root", str(root)).stdout)
    port = {"http": ports[0], "room": ports[1]}
    # bystanders, one per listener, connected through everything
    asgi = await websockets.connect(f"ws://127.0.0.1:{port['http']}/ws")
    room = await websockets.connect(f"ws://127.0.0.1:{port['room']}/")
    results = {}
    t0 = time.monotonic()
    # run every case concurrently, so a case that blocked the node would show in the others
    got = await asyncio.gather(
        *(_attack(port[c.listener], c) for c in CASES), return_exceptions=True
    )
    took = time.monotonic() - t0
    for case, g in zip(CASES, got, strict=True):
        results[case.name] = g if not isinstance(g, BaseException) else repr(g)
    assert results == {c.name: c.expect for c in CASES}
    assert took < HEADER_TIMEOUT + 5, f"the cases took {took:.1f}s: something waited its turn"
    for i in range(1, 4):
        await asyncio.gather(asgi.send("still"), room.send("still"))
        assert await asyncio.wait_for(asgi.recv(), 5) == f"v1 {i} still"
        assert await asyncio.wait_for(room.recv(), 5) == f"v1 n={i}"
    assert cli("ping", "--root", str(root)).returncode == 0
    assert nodes[-1].proc.poll() is None
    await asgi.close()
    await room.close()
