"""Active sockets, as Erlang's ``gen_tcp``: a connection's data arrives as messages.

A :class:`Socket` is owned by one process (its *controlling process*). In an active mode
its data is delivered to the owner's mailbox as ``("tcp", sock, data)``; the end of the
stream as ``("tcp_closed", sock)``; a failure as ``("tcp_error", sock, reason)`` followed
by ``("tcp_closed", sock)``. So the owner — typically a GenServer, in ``handle_info`` —
stays in its behaviour's generic loop between messages, runs no module code while it
waits, and an upgrade never finds it in old code. The pump is runtime code, never
hot-swapped.

Active modes (``active=``): ``True`` (every frame as it arrives), ``"once"`` (one frame,
then passive until re-armed with ``setopts(active="once")``), an int ``N`` (N frames, then
``("tcp_passive", sock)`` and passive; ``setopts(active=M)`` adds M to the count, as
``inet:setopts`` does) and ``False`` (passive: ``await sock.recv()``).

Flow control: the pump reads only while the socket is active *and* the owner has fewer
than ``backlog`` messages queued. A suspended or slow owner therefore stops the reads;
what the peer keeps sending waits in asyncio's bounded stream buffer and then in the
kernel, whose full receive window stops the sender (TCP's own back-pressure). A socket
never puts more than ``backlog`` frames in front of its owner.

Framings (``packet=``): ``"line"`` (each ``\\n``-terminated line, newline included; a line
longer than ``line_max`` is delivered in pieces), ``"raw"`` or ``0`` (whatever arrived,
at most ``chunk`` bytes), ``1``, ``2`` or ``4`` (a big-endian length header of that many
bytes, then the payload; ``send`` adds the header). Frames are cut on demand from one
buffer, so ``setopts(packet=...)`` applies to the bytes not yet delivered.

The socket is linked to its owner: when the owner exits, for any reason, the socket is
closed (the peer sees EOF) and its pump ends. ``controlling_process`` hands it to another
process (the acceptor → connection handler pattern). TCP and Unix sockets alike.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from relhandler.errors import NotAProcessError, SocketError
from relhandler.runtime import listenfds
from relhandler.runtime._kernel import (
    Node,
    Pid,
    Process,
    current_node,
    current_process,
    own_transport,
    owner_process,
)

__all__ = [
    "Active",
    "Listener",
    "Packet",
    "Socket",
    "active",
    "adopt",
    "connect",
    "connect_unix",
    "listen",
    "listen_unix",
    "wrap",
]

Active = bool | Literal["once"] | int
Packet = Literal["line", "raw", 0, 1, 2, 4]

_ids = itertools.count(1)
_POLL_MAX = 0.05  # longest pause between two looks at a backlogged owner's mailbox


def _check_packet(packet: Any) -> Packet:
    if packet in ("line", "raw", 0, 1, 2, 4) and not isinstance(packet, bool):
        return packet  # type: ignore[no-any-return]
    raise SocketError(
        f"packet={packet!r} is not a framing; use 'line', 'raw' (or 0), 1, 2 or 4",
        code="einval",
    )


def _check_active(value: Any) -> Active:
    if isinstance(value, bool) or value == "once" or type(value) is int:
        return value  # type: ignore[no-any-return]
    raise SocketError(
        f"active={value!r} is not a mode; use True, False, 'once' or an int", code="einval"
    )


class Socket:
    """A connection owned by a process; see the module docstring for modes and framings.

    Made by :func:`connect`, :func:`connect_unix`, :meth:`Listener.accept` or :func:`wrap`.
    It is the ``sock`` in every message it sends (compare with ``is`` or ``==``).
    """

    __slots__ = (
        "__weakref__",
        "_active",
        "_armed",
        "_buf",
        "_eof",
        "_lock",
        "_pump",
        "_reader",
        "_watch",
        "_writer",
        "backlog",
        "chunk",
        "closed",
        "id",
        "line_max",
        "node",
        "owner",
        "packet",
        "packet_size",
    )

    def __init__(
        self,
        node: Node,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        owner: Process,
        *,
        active: Active,
        packet: Packet,
        backlog: int,
        chunk: int,
        line_max: int,
        packet_size: int,
    ) -> None:
        self.id = next(_ids)
        self.node = node
        self._reader = reader
        self._writer = writer
        self.owner = owner
        self.packet: Packet = _check_packet(packet)
        self._active: Active = _check_active(active)
        self.backlog = backlog
        self.chunk = chunk
        self.line_max = line_max
        self.packet_size = packet_size
        self._buf = bytearray()
        self._eof = False
        self.closed = False
        self._lock = asyncio.Lock()  # one reader of the stream at a time (pump or recv)
        self._armed = asyncio.Event()
        if self._active is not False:
            self._armed.set()
        self._watch = owner.add_watcher(self._owner_exited)
        tr = self._transport()
        if tr is not None:
            own_transport(tr, owner)
        # the pump belongs to no process (an empty context): the socket's link to its
        # owner is the watcher above, which survives a change of owner
        self._pump = node.loop.create_task(self._run(), context=contextvars.Context())

    def __repr__(self) -> str:
        return f"#Socket<{self.id}>"

    # -- the owner -------------------------------------------------------------
    def _transport(self) -> asyncio.BaseTransport | None:
        if self._writer is not None:
            return self._writer.transport
        return getattr(self._reader, "_transport", None)  # a reader-only socket (active())

    def _owner_exited(self, reason: Any) -> None:
        self.close()

    def controlling_process(self, pid: Pid) -> None:
        """Hand the socket to ``pid``: from now on its messages go there, and it closes
        when that process exits. Only the owner (or code outside every process) may."""
        me = current_process() or owner_process()
        if me is not None and me is not self.owner:
            raise SocketError(
                f"{self!r} belongs to {self.owner.pid}; only its owner may hand it over",
                code="not_owner",
            )
        if self.closed:
            raise SocketError(f"{self!r} is closed", code="closed")
        new = self.node.process(pid)
        self.owner.remove_watcher(self._watch)
        self.owner = new
        self._watch = new.add_watcher(self._owner_exited)
        tr = self._transport()
        if tr is not None:
            own_transport(tr, new)

    # -- options -----------------------------------------------------------------
    @property
    def active(self) -> Active:
        return self._active

    def setopts(self, *, active: Active | None = None, packet: Packet | None = None) -> None:
        """Change the mode or the framing (``inet:setopts``).

        ``active=N`` (an int) adds N to the count left when the socket is already in
        count mode and sets it otherwise; a count that ends at 0 or below makes the socket
        passive and sends ``("tcp_passive", sock)``, as Erlang does.
        """
        if packet is not None:
            self.packet = _check_packet(packet)
        if active is None:
            return
        active = _check_active(active)
        if type(active) is int:
            cur = self._active
            n = active + cur if (type(cur) is int and cur is not True) else active
            if n <= 0:
                self._set_passive()
                self.owner.deliver(("tcp_passive", self))
                return
            self._active = n
        else:
            self._active = active
        if self._active is False:
            self._armed.clear()
        else:
            self._armed.set()

    def _set_passive(self) -> None:
        self._active = False
        self._armed.clear()

    # -- sending -----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Write ``data`` (with its length header in packet 1/2/4 mode). Buffered: use
        ``await sock.drain()`` for back-pressure when sending a lot."""
        w = self._writer
        if w is None:
            raise SocketError(f"{self!r} was made from a reader only; it cannot send")
        if self.closed:
            raise SocketError(f"{self!r} is closed", code="closed")
        p = self.packet
        if p in (1, 2, 4):
            n = len(data)
            if n >= 1 << (8 * int(p)):
                raise SocketError(f"{n} bytes do not fit a packet={p} header", code="emsgsize")
            w.write(n.to_bytes(int(p), "big") + bytes(data))
        else:
            w.write(data)

    async def drain(self) -> None:
        """Wait until the write buffer is below asyncio's high-water mark."""
        if self._writer is not None:
            await self._writer.drain()

    def close(self) -> None:
        """Close the connection (the peer sees EOF); no ``tcp_closed`` is sent, as in
        Erlang's ``gen_tcp:close``."""
        if self.closed:
            return
        self.closed = True
        self.owner.remove_watcher(self._watch)
        tr = self._transport()
        if tr is not None:
            own_transport(tr, None)
            if not tr.is_closing():
                tr.close()
        if not self._pump.done() and self._pump is not asyncio.current_task():
            self._pump.cancel()

    def peername(self) -> Any:
        tr = self._transport()
        return tr.get_extra_info("peername") if tr is not None else None

    def sockname(self) -> Any:
        tr = self._transport()
        return tr.get_extra_info("sockname") if tr is not None else None

    # -- framing -------------------------------------------------------------------
    def _frame(self) -> bytes | None:
        """Cut the next frame from the buffer, or None if it holds no complete one."""
        buf = self._buf
        if not buf:
            return None
        p = self.packet
        if p == "line":
            i = buf.find(b"\n", 0, self.line_max)
            n = i + 1 if i >= 0 else (self.line_max if len(buf) >= self.line_max else 0)
            if n == 0:
                return None
        elif p == "raw" or p == 0:
            n = len(buf)
        else:
            h = int(p)
            if len(buf) < h:
                return None
            size = int.from_bytes(buf[:h], "big")
            if size > self.packet_size:
                raise _Oversize(size)
            if len(buf) < h + size:
                return None
            out = bytes(buf[h : h + size])
            del buf[: h + size]
            return out
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def _rest(self) -> bytes | None:
        """At EOF: what is left (an unterminated last line, raw bytes), or None."""
        if self._buf and self.packet in ("line", "raw", 0):
            out = bytes(self._buf)
            self._buf.clear()
            return out
        self._buf.clear()  # an incomplete packet is dropped, as Erlang does
        return None

    async def _fill(self) -> None:
        async with self._lock:
            chunk = await self._reader.read(self.chunk)
        if chunk:
            self._buf += chunk
        else:
            self._eof = True

    # -- passive reads ------------------------------------------------------------
    async def recv(self, timeout: float | None = None) -> bytes:
        """Passive mode only: the next frame. Raises ``SocketError`` (code ``closed``) at
        the end of the stream, and ``TimeoutError`` after ``timeout`` seconds."""
        if self._active is not False:
            raise SocketError(f"{self!r} is active; recv needs active=False", code="einval")
        async with asyncio.timeout(timeout):
            while True:
                if self.closed:
                    raise SocketError(f"{self!r} is closed", code="closed")
                f = self._frame()
                if f is not None:
                    return f
                if self._eof:
                    rest = self._rest()
                    if rest is not None:
                        return rest
                    raise SocketError(f"{self!r}: the peer closed the connection", code="closed")
                await self._fill()

    # -- the pump ------------------------------------------------------------------
    async def _deliverable(self) -> None:
        """Wait until the socket is active and its owner is not backlogged."""
        spins = 0
        delay = 0.001
        while True:
            if self._active is False:
                await self._armed.wait()
                continue
            if len(self.owner.mailbox) < self.backlog:
                return
            # a backlogged owner: stop reading. A busy owner usually drains its mailbox in
            # its next turn, so look again after a few turns of the loop, then back off
            # (a suspended owner costs one look every _POLL_MAX seconds)
            if spins < 3:
                spins += 1
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)

    def _deliver(self, msg: Any) -> None:
        self.owner.deliver(msg)

    async def _run(self) -> None:
        try:
            while True:
                if self._active is False or len(self.owner.mailbox) >= self.backlog:
                    await self._deliverable()  # (checked here first: no await per frame)
                f = self._frame()
                if f is None:
                    if self._eof:
                        rest = self._rest()
                        if rest is not None:
                            self._delivered(rest)
                            continue
                        break
                    await self._fill()
                    continue
                self._delivered(f)
        except _Oversize as e:
            self._deliver(("tcp_error", self, "emsgsize"))
            self._buf.clear()
            del e
        except (ConnectionError, OSError) as e:
            self._deliver(("tcp_error", self, _reason(e)))
        if not self.closed:
            self._deliver(("tcp_closed", self))
            self.close()

    def _delivered(self, frame: bytes) -> None:
        self._deliver(("tcp", self, frame))
        a = self._active
        if a == "once":
            self._set_passive()
        elif type(a) is int:
            if a <= 1:
                self._set_passive()
                self._deliver(("tcp_passive", self))
            else:
                self._active = a - 1


class _Oversize(Exception):
    pass


def _reason(e: BaseException) -> str:
    import errno

    code = getattr(e, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code].lower()
    return type(e).__name__


# -- making sockets ---------------------------------------------------------------------
_DEFAULTS: dict[str, Any] = {
    "backlog": 256,
    "chunk": 65536,
    "line_max": 65536,
    "packet_size": 16 * 1024 * 1024,
}


def _owner(node: Node, owner: Pid | None) -> Process:
    if owner is not None:
        return node.process(owner)
    p = current_process()
    if p is None:
        raise NotAProcessError("a socket needs an owner: call this in a process, or pass owner=pid")
    return p


def wrap(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    *,
    owner: Pid | None = None,
    active: Active = True,
    packet: Packet = "line",
    backlog: int = _DEFAULTS["backlog"],
    chunk: int = _DEFAULTS["chunk"],
    line_max: int = _DEFAULTS["line_max"],
    packet_size: int = _DEFAULTS["packet_size"],
) -> Socket:
    """Make a Socket of an asyncio stream pair (e.g. from ``asyncio.start_server``'s
    callback), owned by ``owner`` (default: the calling process)."""
    node = current_node()
    return Socket(
        node,
        reader,
        writer,
        _owner(node, owner),
        active=active,
        packet=packet,
        backlog=backlog,
        chunk=chunk,
        line_max=line_max,
        packet_size=packet_size,
    )


def adopt(stream: asyncio.StreamWriter | asyncio.BaseTransport, owner: Pid | None = None) -> None:
    """Make ``owner`` (default: the calling process) the owner of a connection it serves
    without a Socket (say, with its own protocol code over an asyncio stream pair): the
    connection then closes when *that* process exits, not when the acceptor that opened
    it does. ``wrap`` does this itself."""
    node = current_node()
    tr = stream.transport if isinstance(stream, asyncio.StreamWriter) else stream
    own_transport(tr, _owner(node, owner))


def active(reader: asyncio.StreamReader, owner: Pid, **opts: Any) -> Socket:
    """The first API, kept for existing callers: ``wrap(reader, None, owner=owner)``
    (line framing, active; ``send`` needs ``wrap`` with the writer)."""
    return wrap(reader, None, owner=owner, **opts)


async def _open(
    opener: Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
    args: tuple[Any, ...],
    opts: dict[str, Any],
    kw: dict[str, Any],
) -> Socket:
    node = current_node()
    owner = _owner(node, opts.pop("owner", None))
    _check_packet(opts.get("packet", "line"))  # before connecting, not after
    _check_active(opts.get("active", True))
    limit = kw.pop("limit", None) or 2 * opts.get("chunk", _DEFAULTS["chunk"])
    reader, writer = await opener(*args, limit=limit, **kw)
    return wrap(reader, writer, owner=owner.pid, **opts)


async def connect(host: str, port: int, **opts: Any) -> Socket:
    """Open a TCP connection owned by the caller (or ``owner=pid``); takes the options of
    :func:`wrap` (``active``, ``packet``, ``backlog``...)."""
    return await _open(asyncio.open_connection, (host, port), opts, {})


async def connect_unix(path: str | Path, **opts: Any) -> Socket:
    """Open a Unix-socket connection; as :func:`connect`."""
    return await _open(asyncio.open_unix_connection, (str(path),), opts, {})


class Listener:
    """A listening socket (``gen_tcp:listen``): ``await accept()`` gives the next
    connection as a Socket owned by the caller. Closed when the process that opened it
    exits, or by ``close()``. A restart hands it to the new node (``listenfds``)."""

    __slots__ = ("_held", "_opts", "_queue", "_server", "_watch", "node", "owner")

    def __init__(self, node: Node, owner: Process, opts: dict[str, Any]) -> None:
        self.node = node
        self.owner = owner
        self._opts = opts
        self._queue: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._server: asyncio.Server | None = None
        self._held: int | None = None
        self._watch = owner.add_watcher(lambda reason: self.close())

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a plain callback, not a coroutine: no task per connection
        self._queue.put_nowait((reader, writer))

    async def accept(self, timeout: float | None = None, **opts: Any) -> Socket:
        """The next connection, owned by the caller (or ``owner=pid``); ``opts`` override
        the listener's socket options for it."""
        async with asyncio.timeout(timeout):
            reader, writer = await self._queue.get()
        return wrap(reader, writer, **{**self._opts, **opts})

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def sockname(self) -> Any:
        assert self._server is not None
        return self._server.sockets[0].getsockname()

    def close(self) -> None:
        """Stop listening; connections not yet accepted are closed."""
        self.owner.remove_watcher(self._watch)
        if self._server is not None:
            self._server.close()
        listenfds.registry.release(self._held)
        self._held = None
        while not self._queue.empty():
            _r, w = self._queue.get_nowait()
            w.close()


async def _listen(
    starter: Callable[..., Awaitable[asyncio.Server]],
    address: tuple[Any, ...],
    key: Callable[[int], listenfds.ListenKey],
    inherited: socket.socket | None,
    opts: dict[str, Any],
) -> Listener:
    node = current_node()
    owner = _owner(node, opts.pop("owner", None))
    lst = Listener(node, owner, opts)
    limit = 2 * opts.get("chunk", _DEFAULTS["chunk"])
    if inherited is not None:  # the node before the restart listened here: no new bind
        lst._server = await starter(lst._on_connect, sock=inherited, limit=limit)
    else:
        lst._server = await starter(lst._on_connect, *address, limit=limit)
    socks = lst._server.sockets
    if len(socks) == 1:
        lst._held = listenfds.registry.hold(socks[0].fileno(), key(socks[0].family))
    return lst


async def listen(host: str, port: int, **opts: Any) -> Listener:
    """Listen on TCP ``host:port`` (0: any free port, see ``.port``). ``opts`` (``active``,
    ``packet``...) are the defaults of the accepted sockets; ``owner=pid`` as elsewhere."""
    inherited = listenfds.registry.adopt_tcp(host, port) if port else None
    return await _listen(
        asyncio.start_server,
        (host, port),
        lambda family: listenfds.tcp_key(family, host, port),
        inherited,
        opts,
    )


async def listen_unix(path: str | Path, **opts: Any) -> Listener:
    """Listen on a Unix socket at ``path``; as :func:`listen`."""
    key = listenfds.ListenKey(socket.AF_UNIX, str(path), 0)
    return await _listen(
        asyncio.start_unix_server,
        (str(path),),
        lambda family: key,
        listenfds.registry.adopt(key),
        opts,
    )
