"""The websocket behaviour: a connection process whose code changes mid-connection.

In the spirit of cowboy_websocket. A handler is a managed module of functions::

    def init(req, args):                   -> ("ok", state) | ("reply", frames, state)
                                              | ("ok", state, {"subprotocol": p})
                                              | ("reject", http_status)
    def handle_frame(frame, state):        -> ("ok", state) | ("reply", frames, state)
                                              | ("stop", state)
    def handle_info(msg, state):           -> same as handle_frame   (optional)
    def terminate(reason, state):          optional
    def code_change(old_vsn, state, extra) -> ("ok", new_state)      (for advanced updates)

``req`` is a dict (``path``, ``query_string``, ``headers``, ``client``); a frame is
``("text", str)``, ``("binary", bytes)`` or ``("close", code, reason)`` (only in replies);
``frames`` is one frame or a list. Each may be sync or ``async``.

The connection process is a GenServer whose generic loop is this module's fixed callbacks
(runtime code, never hot-swapped); every callback of the handler is looked up on the
module's *current* version for every frame. The socket is *active*: bytes arrive as messages,
so between frames the process sits in its generic loop and the release handler suspends it,
runs ``code_change`` on its state and resumes it exactly as it does a GenServer. Frames that
arrive while it is suspended wait in its mailbox, in order. Put the module in the listener's
connection supervisor (it is, automatically: the child spec's ``modules`` is the handler), and
an appup's ``["update", "my.handler", {change = "advanced"}]`` upgrades every open connection.

The sys state is the handler's state alone (the socket and the protocol machine live beside
it), so ``relhandler`` tooling, the preflight and ``code_change`` see only user data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from typing import Any

import h11
from wsproto import ConnectionType, WSConnection
from wsproto import events as wse
from wsproto.utilities import LocalProtocolError as WsLocalError
from wsproto.utilities import RemoteProtocolError as WsRemoteError

from relhandler.runtime import (
    Pid,
    current,
    current_node,
    gen_server,
    self_pid,
    sockets,
    trap_exit,
)
from relhandler.web._http import _phrase, framed, head_size, refusal
from relhandler.web.config import ListenerConfig

__all__ = ["start_link"]

log = logging.getLogger("relhandler.web.websocket")

READ = 65536
MAX_INFLIGHT = (
    32  # chunks queued in the mailbox before the pump stops reading (uvicorn's ws_max_queue)
)


class _Ws:
    """What a connection process owns besides its handler state."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: ListenerConfig
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.cfg = cfg
        self.h11: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=cfg.max_header_bytes
        )
        self.ws: WSConnection | None = None
        self.open = False
        self.closed = False
        self.parts: list[Any] = []
        self.size = 0
        self.inflight = 0
        self.resume = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None  # the head's timeout, then the pings'
        self.awaiting_pong = False

    def write(self, data: bytes) -> None:
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def ack(self) -> None:
        self.inflight -= 1
        if self.inflight < MAX_INFLIGHT:
            self.resume.set()

    def close_frame(self, code: int, reason: str = "") -> None:
        if self.ws is None or self.closed:
            return
        self.closed = True
        with contextlib.suppress(WsLocalError):
            self.write(self.ws.send(wse.CloseConnection(code=code, reason=reason)))

    def shut(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
        with contextlib.suppress(Exception):  # a transport already gone
            self.writer.close()


_conns: dict[Pid, _Ws] = {}


async def _pump(conn: _Ws, owner: Pid) -> None:
    node = current_node()
    try:
        while True:
            if conn.inflight >= MAX_INFLIGHT:
                conn.resume.clear()
                await conn.resume.wait()
            data = await conn.reader.read(READ)
            if not data:
                break
            conn.inflight += 1
            node.send(owner, ("$ws_data", data))
    except (ConnectionError, OSError):
        pass
    finally:
        node.send(owner, ("$ws_closed",))


def start_link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: Any) -> Any:
    """Start a connection process (the connection supervisor's child start function)."""
    assert cfg.handler is not None
    cbs = _callbacks.get(cfg.handler)
    if cbs is None:
        cbs = _callbacks[cfg.handler] = _Fixed(cfg.handler)
    return gen_server._start(
        cfg.handler, (reader, writer, cfg), name=None, link=True, timeout=None, callbacks=cbs
    )


def _handler(pid: Pid) -> types.ModuleType:
    return current(_conns[pid].cfg.module)


async def _maybe(r: Any) -> Any:
    if isinstance(r, types.CoroutineType):
        return await r
    return r


def _frames(x: Any) -> list[Any]:
    if isinstance(x, tuple) and x and isinstance(x[0], str):
        return [x]
    return list(x)


def _send_frames(conn: _Ws, frames: Any) -> bool:
    """Write the handler's frames; False once a close frame went out."""
    assert conn.ws is not None
    for f in _frames(frames):
        kind = f[0]
        if kind == "text":
            conn.write(conn.ws.send(wse.Message(data=str(f[1]))))
        elif kind == "binary":
            conn.write(conn.ws.send(wse.Message(data=bytes(f[1]))))
        elif kind == "ping":
            conn.write(conn.ws.send(wse.Ping(payload=bytes(f[1]) if len(f) > 1 else b"")))
        elif kind == "close":
            conn.close_frame(int(f[1]) if len(f) > 1 else 1000, str(f[2]) if len(f) > 2 else "")
            return False
        else:
            raise ValueError(f"unknown websocket frame {f!r}; use text, binary, ping or close")
    return True


def _result(conn: _Ws, name: str, r: Any, state: Any) -> Any:
    """Turn a handler's return into the generic loop's."""
    tag = r[0] if isinstance(r, tuple) and r else None
    if tag == "ok" and len(r) == 2:
        return ("noreply", r[1])
    if tag == "reply" and len(r) == 3:
        if not _send_frames(conn, r[1]):
            return ("stop", "normal", r[2])
        return ("noreply", r[2])
    if tag == "stop" and len(r) == 2:
        conn.close_frame(1000)
        return ("stop", "normal", r[1])
    raise ValueError(f"{conn.cfg.module}.{name} returned {r!r}; expected ok/reply/stop tuples")


HANDSHAKE = ("$websocket_handshake",)  # the sys state until the upgrade is done


class _Fixed:
    """The generic websocket loop's gen_server callbacks (not managed: never swapped), one
    object per handler module: ``code_change`` runs on the release handler's task, so it
    knows the module from here, not from the calling process."""

    def __init__(self, module: str) -> None:
        self.module = module

    def init(self, args: tuple[asyncio.StreamReader, asyncio.StreamWriter, ListenerConfig]) -> Any:
        reader, writer, cfg = args
        trap_exit(True)  # a stopping supervisor runs terminate: the client gets 1001
        me = self_pid()
        sockets.adopt(writer)  # the connection is this process's, not the acceptor's
        conn = _Ws(reader, writer, cfg)
        _conns[me] = conn
        node = current_node()
        p = node.processes[me]
        p.add_watcher(lambda _reason: _forget(me))
        conn.pump = node.loop.create_task(_pump(conn, me))
        conn.timer = node.loop.call_later(cfg.header_timeout, node.send, me, ("$ws_timeout",))
        return ("ok", HANDSHAKE)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        me = self_pid()
        conn = _conns[me]
        tag = msg[0] if isinstance(msg, tuple) and msg else None
        if tag == "$ws_data":
            conn.ack()
            if conn.h11 is not None:
                return await _handshake(conn, msg[1], state)
            assert conn.ws is not None
            conn.ws.receive_data(msg[1])
            return await _events(conn, state)
        if tag == "$ws_closed":
            if conn.ws is None or conn.closed:
                return ("stop", "normal", state)
            conn.ws.receive_data(None)
            return await _events(conn, state)
        if tag == "$ws_timeout":
            if conn.h11 is not None:
                _plain(conn, 408, b"Request timeout.")
                return ("stop", "normal", state)
            return ("noreply", state)
        if tag == "$ws_ping":  # uvicorn's keepalive: see _keepalive in _http.py
            if conn.closed or conn.ws is None:
                return ("noreply", state)
            conn.awaiting_pong = True
            with contextlib.suppress(WsLocalError):
                conn.write(conn.ws.send(wse.Ping(payload=b"relhandler")))
            if conn.cfg.ws_ping_timeout > 0:
                _after(conn, me, conn.cfg.ws_ping_timeout, "$ws_pong_due")
            else:
                _after(conn, me, conn.cfg.ws_ping_interval, "$ws_ping")
            return ("noreply", state)
        if tag == "$ws_pong_due":
            if conn.awaiting_pong:
                conn.close_frame(1011, "keepalive ping timeout")
                return ("stop", "normal", state)
            _after(conn, me, conn.cfg.ws_ping_interval, "$ws_ping")
            return ("noreply", state)
        if not conn.open:
            return ("noreply", state)
        fn = getattr(_handler(me), "handle_info", None)
        if fn is None:
            log.warning("%s %s: unexpected message %r", conn.cfg.module, me, msg)
            return ("noreply", state)
        return _result(conn, "handle_info", await _maybe(fn(msg, state)), state)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        fn = getattr(_handler(self_pid()), "handle_call", None)
        if fn is None:
            return ("reply", ("error", "no_handle_call"), state)
        return fn(req, from_, state)

    def handle_cast(self, msg: Any, state: Any) -> Any:
        return ("noreply", state)

    async def terminate(self, reason: Any, state: Any) -> None:
        me = self_pid()
        conn = _conns.get(me)
        if conn is None:
            return
        try:
            if conn.open:
                fn = getattr(_handler(me), "terminate", None)
                if fn is not None:
                    await _maybe(fn(reason, state))
        finally:
            conn.close_frame(_close_code(reason))
            _forget(me)

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        if state == HANDSHAKE:
            return ("ok", state)
        fn = getattr(current(self.module), "code_change", None)
        if fn is None:
            return ("ok", state)
        return fn(old_vsn, state, extra)

    def get_modules(self, state: Any) -> list[str]:
        return [self.module]


_callbacks: dict[str, _Fixed] = {}


def _close_code(reason: Any) -> int:
    """normal: the handler or the client closed (1000); a supervisor or the node stopping
    it: 1001, going away (as cowboy); a crashed handler: 1011."""
    if reason == "normal":
        return 1000
    if reason in ("shutdown", "killed") or (isinstance(reason, tuple) and reason[0] == "shutdown"):
        return 1001
    return 1011


def _after(conn: _Ws, me: Pid, delay: float, tag: str) -> None:
    node = current_node()
    conn.timer = node.loop.call_later(delay, node.send, me, (tag,))


def _forget(pid: Pid) -> None:
    conn = _conns.pop(pid, None)
    if conn is not None:
        conn.shut()


_ERROR_TEXT = {
    400: b"Invalid HTTP request received.",
    431: b"Request header fields too large.",
}


def _plain(
    conn: _Ws, status: int, text: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A plain HTTP error response before the upgrade (h11 frames it)."""
    headers = [
        *(extra or []),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode()),
        (b"connection", b"close"),
        (b"server", b"relhandler"),
    ]
    if status == 426:
        headers.append((b"upgrade", b"websocket"))
    conn.write(
        framed(h11.Response(status_code=status, headers=headers, reason=_phrase(status)), text)
    )
    conn.h11 = None


async def _handshake(conn: _Ws, data: bytes, state: Any) -> Any:
    hc = conn.h11
    assert hc is not None
    hc.receive_data(data)
    try:
        ev = hc.next_event()
    except h11.RemoteProtocolError as e:
        status = e.error_status_hint if e.error_status_hint in (400, 431) else 400
        _plain(conn, status, _ERROR_TEXT[status])
        return ("stop", "normal", state)
    if ev is h11.NEED_DATA:
        return ("noreply", state)
    if isinstance(ev, h11.Request) and head_size(ev) > conn.cfg.max_header_bytes:
        _plain(conn, 431, b"Request header fields too large.")
        return ("stop", "normal", state)
    if not isinstance(ev, h11.Request) or not _is_upgrade(ev):
        _plain(conn, 426, b"This endpoint speaks websocket only.")
        return ("stop", "normal", state)
    trailing = bytes(hc.trailing_data[0])
    conn.h11 = None
    if conn.timer is not None:
        conn.timer.cancel()
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.initiate_upgrade_connection(list(ev.headers), ev.target)
    except WsRemoteError as e:
        status, extra = refusal(e)
        _plain(conn, status, b"Unsupported upgrade request.", extra)
        return ("stop", "normal", state)
    upgrade = next((e for e in ws.events() if isinstance(e, wse.Request)), None)
    conn.ws = ws
    path, _, query = ev.target.partition(b"?")
    peer = conn.writer.get_extra_info("peername")
    req = {
        "path": path.decode("latin-1"),
        "query_string": query.decode("latin-1"),
        "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in ev.headers],
        "client": (peer[0], peer[1]) if isinstance(peer, tuple) else None,
        "subprotocols": list(upgrade.subprotocols) if upgrade else [],
    }
    me = self_pid()
    try:
        r = await _maybe(_handler(me).init(req, None))
    except Exception:
        # the handshake is refused with 500 (as uvicorn answers an app that fails before
        # accepting); the crash itself is the process's, logged as any
        with contextlib.suppress(WsLocalError):
            conn.write(ws.send(wse.RejectConnection(status_code=500, has_body=False)))
        conn.closed = True
        raise
    if isinstance(r, tuple) and len(r) == 2 and r[0] == "reject":
        conn.write(ws.send(wse.RejectConnection(status_code=int(r[1]), has_body=False)))
        conn.closed = True
        return ("stop", "normal", state)
    subprotocol = None
    if isinstance(r, tuple) and len(r) == 3 and r[0] == "ok" and isinstance(r[2], dict):
        subprotocol = r[2].get("subprotocol")  # one of req["subprotocols"]
        r = ("ok", r[1])
    conn.write(ws.send(wse.AcceptConnection(subprotocol=subprotocol)))
    conn.open = True
    if conn.cfg.ws_ping_interval > 0:
        _after(conn, me, conn.cfg.ws_ping_interval, "$ws_ping")
    out = _result(conn, "init", r, state)
    if out[0] == "stop":
        return out
    state = out[1]
    if trailing:
        ws.receive_data(trailing)
        return await _events(conn, state)
    return ("noreply", state)


def _is_upgrade(req: h11.Request) -> bool:
    up = conn = b""
    for k, v in req.headers:
        if k == b"upgrade":
            up = v.lower()
        elif k == b"connection":
            conn = v.lower()
    return up == b"websocket" and b"upgrade" in conn and req.method == b"GET"


async def _events(conn: _Ws, state: Any) -> Any:
    assert conn.ws is not None
    me = self_pid()
    for ev in conn.ws.events():
        if isinstance(ev, wse.Ping):
            conn.write(conn.ws.send(ev.response()))
        elif isinstance(ev, wse.Pong):
            conn.awaiting_pong = False
        elif isinstance(ev, wse.CloseConnection):
            if not conn.closed:
                conn.closed = True
                with contextlib.suppress(WsLocalError):
                    conn.write(conn.ws.send(ev.response()))
            fn = getattr(_handler(me), "terminate", None)
            conn.open = False
            if fn is not None:
                await _maybe(fn(("remote", ev.code), state))
            return ("stop", "normal", state)
        elif isinstance(ev, wse.TextMessage | wse.BytesMessage):
            conn.size += len(ev.data)
            if conn.size > conn.cfg.ws_max_size:
                conn.close_frame(1009, "message too big")
                return ("stop", "normal", state)
            conn.parts.append(ev.data)
            if not ev.message_finished:
                continue
            if isinstance(ev, wse.TextMessage):
                frame: tuple[str, Any] = ("text", "".join(conn.parts))
            else:
                frame = ("binary", b"".join(conn.parts))
            conn.parts, conn.size = [], 0
            r = await _maybe(_handler(me).handle_frame(frame, state))
            out = _result(conn, "handle_frame", r, state)
            if out[0] == "stop":
                return out
            state = out[1]
    return ("noreply", state)
