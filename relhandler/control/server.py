"""The node's control server: a Unix socket, cookie challenge–response, JSON frames.

Every connection is served by its own task, so one slow or silent client never stalls the
node; a client must authenticate within ``AUTH_TIMEOUT`` seconds. Progress events are
best-effort and never block an op; an op's work outlives its connection where it must (an
install runs in a task of the release handler's, which a dropped or cancelled connection
does not cancel). A malformed, oversized,
unauthenticated or truncated frame closes that connection only and changes nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import logging
import os
import secrets
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relhandler.control.protocol import auth_response, encode, read_frame, write_frame
from relhandler.errors import ConfigError, ProtocolError, RelhandlerError

__all__ = [
    "AUTH_TIMEOUT",
    "Connection",
    "ControlServer",
    "Op",
    "Progress",
    "current_connection",
    "ensure_cookie",
    "run_dir",
]

log = logging.getLogger("relhandler.control")

AUTH_TIMEOUT = 5.0
"""Seconds a new connection has to authenticate (``$RELHANDLER_AUTH_TIMEOUT`` overrides)."""
PROGRESS_BACKLOG = 256 * 1024
"""Bytes of unsent output past which progress events to a connection are dropped."""
Progress = Callable[[dict[str, Any]], Awaitable[None]]
Op = Callable[[dict[str, Any], Progress], Awaitable[Any]]


class Connection:
    """The authenticated connection an op is answering (``current_connection()``): lets an op
    keep state for the life of its client (the console's sessions) and notice a client gone."""

    def __init__(self, reader: asyncio.StreamReader, uid: int | None) -> None:
        self.uid = uid
        self._reader = reader
        self._on_close: list[Callable[[], None]] = []

    def peer_closed(self) -> bool:
        """The client closed its end (nothing more will come from it)."""
        return self._reader.at_eof()

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when this connection ends, however it ends."""
        self._on_close.append(fn)

    def _closed(self) -> None:
        for fn in self._on_close:
            try:
                fn()
            except Exception:
                log.exception("control: a connection-close callback failed")
        self._on_close.clear()


_connection: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
    "relhandler_control_connection", default=None
)


def current_connection() -> Connection | None:
    """Inside an op: the connection it answers; None when called otherwise (tests)."""
    return _connection.get()


def run_dir(root: Path) -> Path:
    """The node's private directory under a release root (socket, cookie, pid file)."""
    return root / "run"


def _auth_timeout() -> float:
    raw = os.environ.get("RELHANDLER_AUTH_TIMEOUT")
    if raw is None:
        return AUTH_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(
            f"RELHANDLER_AUTH_TIMEOUT={raw!r} is not a positive number of seconds; "
            f"unset it to use {AUTH_TIMEOUT}"
        )
    return value


def _check_private(path: Path, what: str) -> None:
    mode = path.stat().st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"{what} {path} is accessible to group/others (mode {stat.S_IMODE(mode):o}); "
            f"fix with `chmod {'700' if path.is_dir() else '600'} {path}`",
            code="insecure_permissions",
        )


def ensure_cookie(root: Path) -> bytes:
    """Create ``run/`` (0700) and ``run/cookie`` (0600) on first start; refuse loose modes."""
    rd = run_dir(root)
    if not rd.exists():
        rd.mkdir(mode=0o700, parents=True, exist_ok=True)  # two racing starts: both fine
    _check_private(rd, "control directory")
    cookie = rd / "cookie"
    if not cookie.exists():
        # write a private temp file, then link it into place: the cookie appears whole or
        # not at all, and a racing start that loses keeps the winner's cookie
        fd, tmp = tempfile.mkstemp(prefix=".cookie.", dir=rd)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, cookie)
        finally:
            os.unlink(tmp)
    _check_private(cookie, "cookie file")
    value = cookie.read_text().strip().encode()
    if len(value) < 16:  # an empty cookie would let anyone who can reach the socket in
        raise ConfigError(
            f"cookie file {cookie} holds {len(value)} characters, not a secret (16 or more); "
            f"delete it and start again to get a new one",
            code="weak_cookie",
        )
    return value


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    except OSError:
        return None


class ControlServer:
    """Serves ``ops`` (name → ``async def op(args, progress)``) on ``<root>/run/node.sock``."""

    def __init__(
        self,
        root: Path,
        cookie: bytes,
        ops: dict[str, Op],
        *,
        auth_timeout: float | None = None,
    ) -> None:
        self.root = root
        self.cookie = cookie
        # a dict the release handler extends with `ops[name] = op` before start()
        self.ops = ops
        self.auth_timeout = _auth_timeout() if auth_timeout is None else auth_timeout
        self.path = run_dir(root) / "node.sock"
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._inflight = 0
        self._idle = asyncio.Event()  # set while no request is being answered
        self._idle.set()

    async def start(self) -> None:
        """Listen on ``run/node.sock`` (0600), replacing a stale socket file."""
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        """Stop listening, let in-flight replies go out, drop connections, remove the socket."""
        if self._server is not None:
            self._server.close()
        # let requests being answered (e.g. the `stop` that got us here) send their reply
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 2.0)
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.wait(self._conns, timeout=2)
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        uid = _peer_uid(writer)
        conn = Connection(reader, uid)
        _connection.set(conn)  # this task's own context: the ops it awaits see it
        try:
            await self._session(reader, writer, uid)
        except (ProtocolError, ConnectionError, TimeoutError) as e:
            log.warning("control: closing connection (uid %s): %s", uid, e)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            conn._closed()
            writer.close()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, uid: int | None
    ) -> None:
        challenge = secrets.token_hex(32)
        await write_frame(writer, {"challenge": challenge})
        hello = await asyncio.wait_for(read_frame(reader), self.auth_timeout)
        expected = auth_response(self.cookie, challenge)
        got = hello.get("auth")
        if not isinstance(got, str) or not hmac.compare_digest(got, expected):
            log.warning("control: authentication failed (uid %s)", uid)
            err = {"code": "auth", "message": "authentication failed: wrong cookie", "exit_code": 3}
            await write_frame(writer, {"error": err})
            return
        await write_frame(writer, {"ok": "authenticated"})
        while True:
            try:
                req = await read_frame(reader)
            except ProtocolError as e:
                if "closed in the middle" in str(e) and reader.at_eof():
                    return
                raise
            self._inflight += 1
            self._idle.clear()
            try:
                await self._handle(req, writer, uid)
            finally:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.set()

    async def _handle(
        self, req: dict[str, Any], writer: asyncio.StreamWriter, uid: int | None
    ) -> None:
        rid = req.get("id")
        op = req.get("op")
        args = req.get("args") or {}
        t0 = time.perf_counter()

        async def progress(event: dict[str, Any]) -> None:
            # best-effort and never blocking: an install must not wait on (or fail with) a
            # client that is gone or has stopped reading; such a client misses events
            if writer.is_closing() or writer.transport.get_write_buffer_size() > PROGRESS_BACKLOG:
                return
            writer.write(encode({"id": rid, "event": event}))

        try:
            if not isinstance(op, str) or op not in self.ops:
                raise ProtocolError(
                    f"unknown op {op!r}; known: {', '.join(sorted(self.ops))}", code="unknown_op"
                )
            if not isinstance(args, dict):
                raise ProtocolError("'args' must be a JSON object")
            result = await self.ops[op](args, progress)
            reply: dict[str, Any] = {"id": rid, "ok": result}
            outcome = "ok"
        except RelhandlerError as e:
            reply = {"id": rid, "error": e.to_wire()}
            outcome = f"error {e.code}"
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # SystemExit from user code ends the op, not the node
            log.exception("control op %s failed", op)
            reply = {
                "id": rid,
                "error": {
                    "code": "internal",
                    "message": f"{type(e).__name__}: {e}",
                    "exit_code": 1,
                },
            }
            outcome = "internal error"
        log.info(
            "control: uid=%s op=%s %s in %.1f ms",
            uid,
            op,
            outcome,
            (time.perf_counter() - t0) * 1000,
        )
        try:
            await write_frame(writer, reply)
        except ProtocolError as e:  # a reply over the frame limit: say so, keep the session
            err = {"code": "reply_too_large", "message": f"{op}: {e}", "exit_code": 1}
            await write_frame(writer, {"id": rid, "error": err})
