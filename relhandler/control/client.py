"""Client side of the control channel, used by the CLI (blocking sockets, no event loop)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from relhandler.control.protocol import auth_response, recv_frame, send_frame
from relhandler.errors import AuthError, ProtocolError, UnreachableError, error_from_wire

__all__ = ["Client", "connect"]


class Client:
    """An authenticated connection to a node's control socket."""

    def __init__(self, root: Path, *, timeout: float | None = 30.0) -> None:
        self.root = Path(root)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None

    def open(self) -> Client:
        path = self.root / "run" / "node.sock"
        if not path.exists():
            raise UnreachableError(
                f"no node is running at {self.root} (no socket {path}); "
                f"start one with `relhandler start --root {self.root}`"
            )
        cookie_path = self.root / "run" / "cookie"
        try:
            cookie = cookie_path.read_text().strip().encode()
        except OSError as e:
            raise AuthError(f"cannot read the cookie {cookie_path}: {e.strerror}") from e
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(path))
        except OSError as e:
            sock.close()
            raise UnreachableError(
                f"node at {self.root} is not answering ({e.strerror}); it may have crashed — "
                f"`relhandler start --root {self.root}` cleans up and starts it"
            ) from e
        try:
            hello = recv_frame(sock)
            send_frame(sock, {"auth": auth_response(cookie, str(hello.get("challenge", "")))})
            ack = recv_frame(sock)
        except (ProtocolError, OSError, ValueError) as e:
            sock.close()
            raise UnreachableError(f"control handshake with {path} failed: {e}") from e
        if "error" in ack:
            sock.close()
            raise AuthError(f"node at {self.root} refused the cookie in {cookie_path}")
        self._sock = sock
        return self

    def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request; progress events go to ``on_event``; returns ``ok`` or raises."""
        if self._sock is None:
            self.open()
        sock = self._sock
        assert sock is not None
        rid = next(self._ids)
        sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            send_frame(sock, {"id": rid, "op": op, "args": args or {}})
            while True:
                frame = recv_frame(sock)
                if frame.get("id") != rid:
                    continue
                if "event" in frame:
                    if on_event is not None:
                        on_event(frame["event"])
                    continue
                if "error" in frame:
                    raise error_from_wire(frame["error"])
                return frame.get("ok")
        except (TimeoutError, OSError, ProtocolError) as e:
            raise UnreachableError(f"lost the node at {self.root} during {op!r}: {e}") from e

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self.open()

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(root: Path | str, *, timeout: float | None = 30.0) -> Client:
    """Open an authenticated client (use as a context manager)."""
    return Client(Path(root), timeout=timeout)
