"""One HTTP/1.1 connection served by ASGI (h11 for HTTP, wsproto for websockets).

The connection is a process (spawned by the listener's connection supervisor) that runs this
loop, runtime code that is never hot-swapped. Each request and each websocket is handed to
the ASGI app that the managed module holds *when it arrives* (``relhandler.runtime.current``),
so after an install new requests run new code while a websocket endpoint that is looping
keeps its version until it returns (its frames are the process's "old code", see runtime.md).

Defaults follow uvicorn's: 5 s keep-alive, 16 KiB of request head (h11's default), one
request at a time per connection with pipelined bytes buffered up to 64 KiB (then reading
pauses), ``server``/``date`` headers, 500 when the app fails before responding, 400 for a
malformed request. A request head that does not arrive within ``header_timeout`` gets 408.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import h11
from wsproto import ConnectionType, WSConnection
from wsproto import events as wse
from wsproto.utilities import LocalProtocolError as WsLocalError
from wsproto.utilities import RemoteProtocolError as WsRemoteError

from relhandler.runtime import current, sockets
from relhandler.web.config import ListenerConfig

__all__ = [
    "ClientDisconnected",
    "drain",
    "framed",
    "head_size",
    "refusal",
    "serve_connection",
]

log = logging.getLogger("relhandler.web")

ASGIApp = Callable[..., Awaitable[None]]
READ = 65536
WS_MAX_QUEUE = 32  # websocket messages read ahead of the app before reading pauses (uvicorn's)

_date_cache: list[Any] = [0, b""]


def _date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    d: bytes = _date_cache[1]
    return d


_PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}
_SERVER = (b"server", b"relhandler")


def _phrase(status: int) -> bytes:
    return _PHRASES.get(status, b"")


class ClientDisconnected(OSError):
    """The peer went away (EOF or reset). An app's ``send`` on a closed connection raises it:
    ASGI 2.4 asks for an ``OSError`` there, and Starlette stops a stream on one."""


class _HeadTimeout(Exception):
    """No complete request head in time."""


def head_size(req: h11.Request) -> int:
    """The bytes of a request head that count against ``max_header_bytes``."""
    return len(req.target) + sum(len(k) + len(v) + 4 for k, v in req.headers.raw_items())


def framed(head: h11.Response, body: bytes, conn: h11.Connection | None = None) -> bytes:
    """The bytes of a complete response, framed by h11 (no hand-written framing): by
    ``conn``, or by a fresh server state machine that has just read a request (for a
    connection whose own h11 is in ERROR, or that never had one)."""
    if conn is None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        conn.next_event()
    return conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())


def refusal(e: WsRemoteError) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The status and headers wsproto says a bad handshake gets (400, or 426 with the
    version it speaks)."""
    hint = e.event_hint
    if isinstance(hint, wse.RejectConnection):
        return hint.status_code, list(hint.headers)
    return 400, []


class _Head:
    """What the connection loop needs from a request head, read in one pass."""

    __slots__ = ("close", "expect_100", "headers", "req", "upgrade")

    def __init__(self, req: h11.Request) -> None:
        self.req = req
        # ASGI wants the names lowercased (raw_items is a list; iterating h11's Headers
        # goes through Sequence.__getitem__ one item at a time)
        self.headers = [(k.lower(), v) for k, v in req.headers.raw_items()]
        self.close = self.expect_100 = False
        upgrade = connection = b""
        framing = 0  # content-length: 1, transfer-encoding: 2
        for k, v in self.headers:
            if k == b"connection":
                connection = v.lower()
                self.close = self.close or b"close" in connection
            elif k == b"upgrade":
                upgrade = v.lower()
            elif k == b"expect":
                self.expect_100 = v.lower() == b"100-continue"
            elif k == b"content-length":
                framing |= 1
            elif k == b"transfer-encoding":
                framing |= 2
        if framing == 3:
            # both: h11 reads the body by Transfer-Encoding; RFC 9112 6.1 then wants the
            # connection closed after the answer (a proxy in front may have read by length)
            self.close = True
        self.upgrade = upgrade == b"websocket" and b"upgrade" in connection and req.method == b"GET"


class _Conn:
    """The socket and the h11 state of one connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: ListenerConfig
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.cfg = cfg
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=cfg.max_header_bytes)
        self.eof = False
        self.busy = False  # an HTTP request is being answered
        self.draining = False  # the listener stops: answer what is under way, then close
        self.lifespan_state: dict[str, Any] = {}
        sock = writer.get_extra_info("sockname")
        peer = writer.get_extra_info("peername")
        self.server = (sock[0], sock[1]) if isinstance(sock, tuple) else None
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.scheme = "https" if writer.get_extra_info("sslcontext") is not None else "http"
        self.transport = writer.transport
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        # one lazy timer per connection, not one per read (see _arm)
        self.deadline = 0.0  # loop time the current read_until gives up at; 0: no wait
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.timed_out = False

    async def read(self) -> bytes:
        try:
            data = await self.reader.read(READ)
        except (ConnectionError, OSError) as e:
            raise ClientDisconnected from e
        if not data:
            self.eof = True
        return data

    def _arm(self, deadline: float) -> None:
        # Keep-alive deadlines move forward with every request: the timer stays where it
        # is and, when it fires early, re-arms for the deadline then in force. So a busy
        # connection costs one timer per keep-alive period, not a timer per request.
        self.deadline = deadline
        t = self.timer
        if t is not None:
            if self.timer_at <= deadline:
                return
            t.cancel()
        self.timer_at = deadline
        self.timer = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self.timer = None
        d = self.deadline
        if not d:
            return  # not waiting (a request is being served): the next wait re-arms
        if self.loop.time() < d:
            self.timer_at = d
            self.timer = self.loop.call_at(d, self._fire)
            return
        # what asyncio.timeout does: cancel the waiting task, turned into TimeoutError below
        self.timed_out = True
        self.task.cancel()

    async def read_until(self, deadline: float) -> bytes:
        """``read``, or TimeoutError at loop time ``deadline``."""
        self._arm(deadline)
        try:
            data = await self.reader.read(READ)
        except asyncio.CancelledError:
            if self.timed_out:
                self.timed_out = False
                if self.task.uncancel() == 0:  # our cancel alone, not a kill
                    raise TimeoutError from None
            raise
        except (ConnectionError, OSError) as e:
            raise ClientDisconnected from e
        finally:
            self.deadline = 0.0
        if not data:
            self.eof = True
        return data

    def write(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        if self.transport.get_write_buffer_size() > self.cfg.high_water:
            try:
                await self.writer.drain()
            except (ConnectionError, OSError) as e:
                raise ClientDisconnected from e

    async def next_head(self) -> _Head | None:
        """The next request's head, or None when the client is done (EOF, idle timeout)."""
        h = self.h11
        buf, closed = h.trailing_data
        # nothing buffered (no pipelined request): h11 would only say NEED_DATA
        ev = h.next_event() if buf or closed or h.their_state is not h11.IDLE else h11.NEED_DATA
        if ev is h11.NEED_DATA:
            cfg = self.cfg
            loop = self.loop
            deadline = loop.time() + cfg.keep_alive_timeout
            in_head = False
            while ev is h11.NEED_DATA:
                if not in_head and h.trailing_data[0]:
                    in_head = True  # a head has begun: it gets header_timeout from now
                    deadline = loop.time() + cfg.header_timeout
                try:
                    data = await self.read_until(deadline)
                except TimeoutError:
                    if not in_head:
                        return None  # idle keep-alive connection: closed silently
                    raise _HeadTimeout from None
                if not data and not h.trailing_data[0]:
                    return None
                h.receive_data(data)
                ev = h.next_event()
        if isinstance(ev, h11.Request):
            if head_size(ev) > self.cfg.max_header_bytes:
                # h11 bounds only a head still incomplete; one that arrived whole in a
                # single read is measured here, so the limit does not depend on timing
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            return _Head(ev)
        if ev is h11.PAUSED or isinstance(ev, h11.ConnectionClosed):
            return None
        raise h11.RemoteProtocolError(f"unexpected {type(ev).__name__}", error_status_hint=400)

    async def body_event(self) -> h11.Data | h11.EndOfMessage | None:
        """The next piece of the request body (None: the client went away)."""
        while True:
            ev = self.h11.next_event()
            if ev is h11.NEED_DATA:
                data = await self.read()
                self.h11.receive_data(data)
                continue
            if isinstance(ev, h11.Data | h11.EndOfMessage):
                return ev
            return None

    def simple_response(
        self,
        status: int,
        text: bytes,
        *,
        close: bool = True,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """A complete plain-text response (errors); the connection closes after it."""
        headers = [
            *(extra or []),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(text)).encode()),
            (b"server", b"relhandler"),
            (b"date", _date()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        head = h11.Response(status_code=status, headers=headers, reason=_phrase(status))
        try:
            self.write(framed(head, text, self.h11))
        except h11.LocalProtocolError:
            self.write(framed(head, text))  # h11 is in ERROR after a bad request

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        with contextlib.suppress(Exception):  # a transport already gone
            self.writer.close()


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    cfg: ListenerConfig,
    shared: dict[str, Any] | None = None,
) -> None:
    """Serve one connection until it closes (the body of a connection process).

    ``shared["state"]`` is the lifespan state; each request's scope gets a shallow copy."""
    sockets.adopt(writer)  # the connection is this process's, not the acceptor's
    c = _Conn(reader, writer, cfg)
    c.lifespan_state = shared["state"] if shared is not None else {}
    live: set[_Conn] | None = shared.get("conns") if shared is not None else None
    if live is not None:
        live.add(c)  # so a stopping listener can drain it
    apps = _Apps(cfg)
    try:
        while not c.draining:
            try:
                head = await c.next_head()
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint if e.error_status_hint in (400, 431) else 400
                body = (
                    b"Request header fields too large."
                    if status == 431
                    else b"Invalid HTTP request received."
                )
                c.simple_response(status, body)
                return
            except _HeadTimeout:
                c.simple_response(408, b"Request timeout.")
                return
            if head is None:
                return
            app = apps.current()
            if head.upgrade:
                try:
                    ws = _WebSocket(c, head, app)
                except WsRemoteError as e:
                    status, extra = refusal(e)
                    c.simple_response(status, b"Unsupported upgrade request.", extra=extra)
                    return
                if live is not None:
                    live.discard(c)  # not drained: the connection supervisor sends 1012
                await ws.run()
                return
            c.busy = True
            keep = await _HttpCycle(c, head, app).run()
            c.busy = False
            if not keep:
                return
            if not await _finish_cycle(c):
                return
    except ClientDisconnected:
        return
    finally:
        c.busy = False
        if live is not None:
            live.discard(c)
        c.close()


async def drain(live: set[_Conn], timeout: float) -> None:
    """A stopping listener's connections, as uvicorn's shutdown: an idle keep-alive
    connection is closed now, a request under way is answered (``connection: close``) and
    then closed, for ``timeout`` s at most (then its process is killed with the rest).
    Websockets are left to the connection supervisor (1012)."""
    for c in list(live):
        c.draining = True
        if not c.busy:
            c.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(c.busy for c in live) and loop.time() < deadline:
        await asyncio.sleep(0.02)


class _Apps:
    """The listener's ASGI app as its module's current version holds it right now."""

    __slots__ = ("attr", "live", "module")

    def __init__(self, cfg: ListenerConfig) -> None:
        self.module = cfg.module
        self.attr = cfg.attr
        self.live: Any = None

    def current(self) -> ASGIApp:
        # a LiveModule forwards each lookup to the version current at that moment, so
        # the handle is kept for the connection; a module gone since (deleted, purged)
        # takes the full path, which loads it again as the first request did
        live = self.live
        if live is not None:
            try:
                app: ASGIApp = getattr(live, self.attr)
                return app
            except AttributeError:
                pass
        self.live = live = current(self.module)
        app = getattr(live, self.attr)
        return app


async def _finish_cycle(c: _Conn) -> bool:
    """Start the next request cycle; read an unread request body away first (bounded)."""
    budget = c.cfg.high_water
    while c.h11.their_state is h11.SEND_BODY and budget > 0:
        try:
            ev = await c.body_event()
        except h11.RemoteProtocolError:
            return False  # a malformed body nobody read: the response is out, close
        if ev is None:
            return False
        if isinstance(ev, h11.Data):
            budget -= len(ev.data)
    if c.h11.our_state is not h11.DONE or c.h11.their_state is not h11.DONE:
        return False
    c.h11.start_next_cycle()
    return True


def _scope_base(c: _Conn, head: _Head, kind: str) -> dict[str, Any]:
    req = head.req
    raw_path, _, query = req.target.partition(b"?")
    root_path = c.cfg.root_path
    v = req.http_version
    return {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": _VERSIONS.get(v) or v.decode(),
        "scheme": ("wss" if c.scheme == "https" else "ws") if kind == "websocket" else c.scheme,
        "path": root_path + unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": root_path,
        "headers": head.headers,
        "client": c.client,
        "server": c.server,
        "state": dict(c.lifespan_state),
    }


class _HttpCycle:
    """One request/response cycle (ASGI ``http`` scope)."""

    __slots__ = (
        "app",
        "body_done",
        "c",
        "complete",
        "expect_100",
        "gone",
        "head",
        "headers",
        "keep_alive",
        "request",
        "started",
        "status",
    )

    def __init__(self, c: _Conn, head: _Head, app: ASGIApp) -> None:
        self.c = c
        self.request = head
        self.app = app
        self.started = False
        self.complete = False
        self.body_done = False
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] | None = []
        self.keep_alive = not head.close
        self.gone = False  # the connection is closed under the app (its sends raise)
        self.expect_100 = head.expect_100
        self.head = head.req.method == b"HEAD"

    async def run(self) -> bool:
        """Run the app; True if the connection may serve another request."""
        scope = _scope_base(self.c, self.request, "http")
        scope["method"] = self.request.req.method.decode()
        try:
            await self.app(scope, self.receive, self.send)
        except ClientDisconnected:
            return False
        except Exception:
            if self.gone or self.c.writer.is_closing():  # what its client's leaving raised
                log.debug("ASGI app ended by a disconnect on %s", scope["path"], exc_info=True)
                return False
            log.exception("ASGI app raised on %s %s", scope["method"], scope["path"])
            if not self.started:
                self.c.simple_response(500, b"Internal Server Error")
            return False
        if self.gone:
            return False
        if not self.started:
            log.error("ASGI app returned without a response for %s", scope["path"])
            self.c.simple_response(500, b"Internal Server Error")
            return False
        if not self.complete:
            return False
        return self.keep_alive and self.c.h11.our_state is h11.DONE

    async def receive(self) -> dict[str, Any]:
        c = self.c
        if self.complete or c.eof:
            return {"type": "http.disconnect"}
        if not self.body_done:
            if self.expect_100 and not self.started:
                self.expect_100 = False
                c.write(
                    c.h11.send(
                        h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                    )
                )
            try:
                ev = await c.body_event()
            except h11.RemoteProtocolError:
                # a malformed body (bad chunking): 400, as for a bad head; the app sees
                # the client go, and its sends raise ClientDisconnected
                if not self.started:
                    self.started = True
                    c.simple_response(400, b"Invalid HTTP request received.")
                self.gone = True
                c.close()
                return {"type": "http.disconnect"}
            if ev is None:
                return {"type": "http.disconnect"}
            if isinstance(ev, h11.EndOfMessage):
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": bytes(ev.data), "more_body": True}
        # the body is read: wait for the client to go away, buffering pipelined requests
        while True:
            if len(c.h11.trailing_data[0]) >= c.cfg.high_water:
                await asyncio.Event().wait()  # paused until the response completes (cancel)
            data = await c.read()
            if not data or self.complete:
                return {"type": "http.disconnect"}
            c.h11.receive_data(data)

    async def send(self, msg: dict[str, Any]) -> None:
        c = self.c
        if self.gone or c.writer.is_closing():
            self.gone = True
            raise ClientDisconnected("the client closed the connection")
        t = msg["type"]
        if t == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = int(msg["status"])
            # h11 checks the names and values and lowercases the names it compares
            headers = list(msg.get("headers", ()))
            headers.append(_SERVER)
            headers.append((b"date", _date()))
            if not self.keep_alive or c.draining:
                headers.append((b"connection", b"close"))
            self.headers = headers
            return
        if t == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body after the response completed")
            # head, body and end in one write: one send() per response, not three (the
            # syscall was half of a small response's cost)
            out: list[bytes] = []
            if self.headers is not None:
                head = h11.Response(
                    status_code=self.status, headers=self.headers, reason=_phrase(self.status)
                )
                out.append(c.h11.send(head) or b"")
                self.headers = None
            body = msg.get("body", b"")
            if body and not self.head:
                out.append(c.h11.send(h11.Data(data=body)) or b"")
            if not msg.get("more_body", False):
                self.complete = True
                out.append(c.h11.send(h11.EndOfMessage()) or b"")
            c.write(b"".join(out))
            await c.drain()
            return
        raise RuntimeError(f"unexpected ASGI message {t!r} in an http scope")


class _WebSocket:
    """An ASGI ``websocket`` scope over wsproto.

    Once accepted, a reader task (a child of the connection process, runtime code) reads
    the socket whatever the app does, as uvicorn: pings are answered and a client's close
    completes while the app only sends, and a send after the client left raises
    ``ClientDisconnected``. Messages wait in a queue of ``WS_MAX_QUEUE``; when it is full,
    reading pauses until the app receives."""

    def __init__(self, c: _Conn, head: _Head, app: ASGIApp) -> None:
        self.c = c
        self.request = head
        self.app = app
        self.ws = WSConnection(ConnectionType.SERVER)
        self.ws.initiate_upgrade_connection(head.headers, head.req.target)
        self.pending = self._trailing()
        self.accepted = False
        self.closed = False
        self.connected = False
        self.disconnected = False
        self.queue: deque[dict[str, Any]] = deque()
        self.parts: list[Any] = []
        self.size = 0
        self.upgrade: wse.Request | None = None
        self.reader: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # the queue got a message, or the reader ended
        self.room = asyncio.Event()  # the queue has room again
        self.ended = False  # nothing more to read: the client closed, or 1009 was sent
        self.pinger: asyncio.Task[None] | None = None
        self.pong = asyncio.Event()
        for ev in self.ws.events():
            if isinstance(ev, wse.Request):
                self.upgrade = ev

    def _trailing(self) -> bytes:
        data, _closed = self.c.h11.trailing_data
        return bytes(data)

    async def run(self) -> None:
        scope = _scope_base(self.c, self.request, "websocket")
        scope["subprotocols"] = list(self.upgrade.subprotocols) if self.upgrade else []
        try:
            await self.app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            # killed: a brutal purge of its old code, or the node stopping (1012: restart)
            self._close(1012, "service restart")
            raise
        except ClientDisconnected:
            return
        except Exception:
            if self.disconnected or self.ended:  # the app raised on the client's leaving
                log.debug("ASGI websocket app ended by a disconnect", exc_info=True)
                return
            log.exception("ASGI websocket app raised on %s", scope["path"])
            if not self.accepted:
                self._reject(500)
            else:
                self._close(1011, "")
            return
        finally:
            for t in (self.reader, self.pinger):
                if t is not None:
                    t.cancel()
        if not self.accepted:
            self._reject(403)
        else:
            self._close(1000, "")

    def _reject(self, status: int) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(WsLocalError):
            self.c.write(self.ws.send(wse.RejectConnection(status_code=status, has_body=False)))

    def _close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(WsLocalError):
            self.c.write(self.ws.send(wse.CloseConnection(code=code, reason=reason)))

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        while not self.queue:
            if self.reader is None and not self.closed:
                self._start_reader()
            elif self.reader is None or self.reader.done():
                self.disconnected = True
                return {"type": "websocket.disconnect", "code": 1006}
            self.ready.clear()
            await self.ready.wait()
        msg = self.queue.popleft()
        self.room.set()
        if msg["type"] == "websocket.disconnect":
            self.disconnected = True
        return msg

    def _start_reader(self) -> None:
        if self.reader is None:
            self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _keepalive(self) -> None:
        """uvicorn's websocket keepalive: a ping every ``ws_ping_interval`` s, and no pong
        within ``ws_ping_timeout`` s closes the connection with 1011, so a peer gone without
        a word (no FIN) does not hold a connection and its app forever."""
        cfg = self.c.cfg
        while True:
            await asyncio.sleep(cfg.ws_ping_interval)
            if self.ended or self.closed:
                return
            self.pong.clear()
            with contextlib.suppress(WsLocalError):
                self.c.write(self.ws.send(wse.Ping(payload=b"relhandler")))
            try:
                async with asyncio.timeout(cfg.ws_ping_timeout or None):  # 0: none
                    await self.pong.wait()
            except TimeoutError:
                self._close(1011, "keepalive ping timeout")
                self.queue.append({"type": "websocket.disconnect", "code": 1011})
                self.ended = True
                self.ready.set()
                self.c.close()
                return

    async def _read(self) -> None:
        try:
            while not self.ended:
                if len(self.queue) >= WS_MAX_QUEUE:
                    self.room.clear()
                    await self.room.wait()
                    continue
                data = await self.c.read()
                self.ws.receive_data(data or None)
                self._events()
                self.ready.set()
                if not data:
                    break
                await self.c.drain()
        except ClientDisconnected:
            pass
        finally:
            self.ended = self.closed = True  # the app's sends raise from now on
            if not any(m["type"] == "websocket.disconnect" for m in self.queue):
                self.queue.append({"type": "websocket.disconnect", "code": 1006})
            self.ready.set()

    def _events(self) -> None:
        for ev in self.ws.events():
            if isinstance(ev, wse.Ping):
                with contextlib.suppress(WsLocalError):  # a ping after our close frame
                    self.c.write(self.ws.send(ev.response()))
            elif isinstance(ev, wse.Pong):
                self.pong.set()
            elif isinstance(ev, wse.CloseConnection):
                if not self.closed:
                    self.closed = True
                    with contextlib.suppress(WsLocalError):
                        self.c.write(self.ws.send(ev.response()))
                self.queue.append({"type": "websocket.disconnect", "code": ev.code})
                self.ended = True
                return
            elif isinstance(ev, wse.TextMessage | wse.BytesMessage):
                self.size += len(ev.data)
                if self.size > self.c.cfg.ws_max_size:
                    self._close(1009, "message too big")
                    self.queue.append({"type": "websocket.disconnect", "code": 1009})
                    self.ended = True
                    return
                self.parts.append(ev.data)
                if ev.message_finished:
                    msg: dict[str, Any] = {"type": "websocket.receive"}
                    if isinstance(ev, wse.TextMessage):
                        msg["text"] = "".join(self.parts)
                    else:
                        msg["bytes"] = b"".join(self.parts)
                    self.queue.append(msg)
                    self.parts = []
                    self.size = 0

    async def send(self, msg: dict[str, Any]) -> None:
        t = msg["type"]
        if t == "websocket.accept":
            if self.accepted or self.closed:
                raise RuntimeError("websocket.accept after the handshake")
            self.accepted = True
            headers = [(bytes(k), bytes(v)) for k, v in msg.get("headers", [])]
            self.c.write(
                self.ws.send(
                    wse.AcceptConnection(subprotocol=msg.get("subprotocol"), extra_headers=headers)
                )
            )
            if self.pending:
                self.ws.receive_data(self.pending)
                self.pending = b""
                self._events()
            self._start_reader()
            if self.c.cfg.ws_ping_interval > 0 and self.pinger is None:
                self.pinger = asyncio.get_running_loop().create_task(self._keepalive())
            return
        if t == "websocket.send":
            if not self.accepted or self.closed or self.c.writer.is_closing():
                # ASGI 2.4: a send on a closed connection raises an OSError
                raise ClientDisconnected("the websocket is closed")
            if msg.get("text") is not None:
                self.c.write(self.ws.send(wse.Message(data=msg["text"])))
            else:
                self.c.write(self.ws.send(wse.Message(data=bytes(msg.get("bytes") or b""))))
            await self.c.drain()
            return
        if t == "websocket.close":
            if not self.accepted:
                self._reject(403)
            else:
                self._close(int(msg.get("code", 1000)), str(msg.get("reason") or ""))
            return
        raise RuntimeError(f"unexpected ASGI message {t!r} in a websocket scope")
