"""relhandler.web's HTTP/1.1 cycle on an in-process node: keep-alive, pipelining, the idle
and head timeouts (one lazy timer per connection), HEAD, 100-continue, connection: close.

The client side is parsed with h11 in client mode, so the checks do not depend on how the
server spells its bytes."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11
import pytest

from relhandler import web
from relhandler.runtime import Node
from relhandler.runtime import supervisor as sup
from relhandler.web.config import ListenerConfig

_ids = itertools.count(1)
KEEP_ALIVE = 0.4
HEADER_TIMEOUT = 0.3

APP = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(float(scope["query_string"] or b"0"))
    text = scope["method"].encode() + b" " + scope["path"].encode() + b" " + body
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(text)).encode())]})
    await send({"type": "http.response.body", "body": text})
"""


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[int]:
    name = f"cycleapp{next(_ids)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP))
    async with Node() as node:
        node.code.set_path([tmp_path])
        cfg = ListenerConfig(
            name="http",
            app=f"{name}:app",
            keep_alive_timeout=KEEP_ALIVE,
            header_timeout=HEADER_TIMEOUT,
        )
        await sup.start("relhandler.web.listener", ("top", "c", (cfg,)))
        yield await web.port("c", "http")


class Client:
    """One raw connection, its responses parsed by an h11 client."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w
        self.h = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def event(self) -> Any:
        while True:
            ev = self.h.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            self.h.receive_data(await asyncio.wait_for(self.r.read(65536), 10))

    async def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """The next final response (informational ones skipped): status, headers, body."""
        ev = await self.event()
        while isinstance(ev, h11.InformationalResponse):
            ev = await self.event()
        assert isinstance(ev, h11.Response), ev
        body = b""
        while not isinstance(end := await self.event(), h11.EndOfMessage):
            body += end.data
        if self.h.our_state is h11.DONE and self.h.their_state is h11.DONE:
            self.h.start_next_cycle()
        return ev.status_code, dict(ev.headers), body

    def send(self, *events: Any) -> None:
        self.w.write(b"".join(self.h.send(e) or b"" for e in events))

    def get(self, target: str, method: str = "GET", body: bytes = b"", **hdrs: str) -> None:
        headers = [("host", "t"), *((k.replace("_", "-"), v) for k, v in hdrs.items())]
        if body:
            headers.append(("content-length", str(len(body))))
        events: list[Any] = [h11.Request(method=method, target=target, headers=headers)]
        if body:
            events.append(h11.Data(data=body))
        self.send(*events, h11.EndOfMessage())

    async def eof_after(self) -> float:
        """Seconds until the server closes, no bytes in between."""
        t = time.monotonic()
        assert await asyncio.wait_for(self.r.read(), 10) == b""
        return time.monotonic() - t


async def test_pipelined_requests_are_answered_in_order_on_one_connection(port: int) -> None:
    c = await Client.open(port)
    raw = (
        b"GET /a HTTP/1.1\r\nhost: t\r\n\r\n"
        b"POST /b HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello"
        b"GET /c HTTP/1.1\r\nhost: t\r\n\r\n"
    )
    c.w.write(raw)  # three requests in one segment
    got = []
    for _ in range(3):
        # the h11 client only parses: its state needs a request sent for each response
        c.h.send(h11.Request(method="GET", target="/", headers=[("host", "t")]))
        c.h.send(h11.EndOfMessage())
        got.append(await c.response())
    assert [g[2] for g in got] == [b"GET /a ", b"POST /b hello", b"GET /c "]
    c.w.write(b"GET /d HTTP/1.1\r\nhost: t\r\n\r\n")  # and the connection serves on
    assert (await c.response())[2] == b"GET /d "


async def test_keep_alive_deadline_moves_with_each_request_then_idle_closes(port: int) -> None:
    c = await Client.open(port)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 3 * KEEP_ALIVE:  # longer than one keep-alive period
        c.get(f"/{n}")
        assert (await c.response())[2] == f"GET /{n} ".encode()
        n += 1
        await asyncio.sleep(KEEP_ALIVE / 2)  # idle, but under the timeout each time
    # then idle for good: closed silently (no 408, no bytes), about KEEP_ALIVE later
    waited = await c.eof_after()
    assert KEEP_ALIVE / 2 - 0.05 < waited < KEEP_ALIVE + 2.0


async def test_a_request_longer_than_the_keep_alive_timeout_is_not_cut(port: int) -> None:
    c = await Client.open(port)
    c.get(f"/slow?{3 * KEEP_ALIVE}")  # served past the timer's first deadline
    assert (await c.response())[0] == 200
    c.get("/after")
    assert (await c.response())[2] == b"GET /after "


async def test_a_stalled_head_gets_408_after_the_header_timeout(port: int) -> None:
    c = await Client.open(port)
    t = time.monotonic()
    c.w.write(b"GET / HTTP/1.1\r\nhost: t\r\n")  # no blank line: the head never ends
    data = await asyncio.wait_for(c.r.read(), 10)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert HEADER_TIMEOUT - 0.05 < time.monotonic() - t < KEEP_ALIVE + 2.0


async def test_head_expect_continue_and_connection_close(port: int) -> None:
    c = await Client.open(port)
    c.get("/h", method="HEAD")
    status, headers, body = await c.response()
    assert (status, body) == (200, b"")
    assert headers[b"content-length"] == b"8"  # len("HEAD /h "), as the app said
    c.send(
        h11.Request(
            method="POST",
            target="/e",
            headers=[("host", "t"), ("content-length", "2"), ("expect", "100-continue")],
        )
    )
    ev = await c.event()
    assert isinstance(ev, h11.InformationalResponse) and ev.status_code == 100
    c.send(h11.Data(data=b"ok"), h11.EndOfMessage())
    status, headers, body = await c.response()
    assert (status, body) == (200, b"POST /e ok")
    assert headers[b"server"] == b"relhandler" and b"date" in headers
    c.get("/last", connection="close")
    status, headers, body = await c.response()
    assert headers[b"connection"] == b"close" and body == b"GET /last "
    assert await c.eof_after() < 2.0
