"""Listening sockets handed to the re-executed node (as systemd socket activation and
gunicorn's USR2 do): a restart keeps the ports listening, so new connections wait in the
kernel's backlog instead of being refused.

Every listener the node opens (``sockets.listen``, the web listeners) is *held*: the
registry keeps a duplicate of its fd, keyed by ``(family, host, port)`` as the code asked
for it. A normal close closes the duplicate too. Once the node is restarting
(:meth:`FdRegistry.hand_over`), closing a listener keeps the duplicate, so the socket stays
in LISTEN state while the applications stop; just before the exec, :meth:`FdRegistry.export`
marks the held fds inheritable (only then) and names them in ``RELHANDLER_LISTEN_FDS``. The
new node takes them back (:meth:`FdRegistry.inherit`, non-inheritable again), and code that
listens on the same address gets the inherited socket (:meth:`FdRegistry.adopt`) instead of
binding a new one; the ones no code adopted are closed once the node has booted.

Established connections are not handed over: the exec closes them (their peers see EOF or
a reset), as any restart does. A listener on port 0 is never adopted (its port is new
each time), nor one whose address resolves to several sockets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass

__all__ = ["ENV", "FdRegistry", "ListenKey", "registry", "tcp_key"]

ENV = "RELHANDLER_LISTEN_FDS"
"""The environment variable that carries the listening fds across the exec (a JSON list of
``[fd, family, host, port]``)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenKey:
    """The address a listener was asked for: its socket family, host (or Unix path) and port
    as the code gave them (``port`` is 0 for Unix sockets)."""

    family: int
    host: str
    port: int


def _is_listening(fd: int) -> bool:
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with s:
        try:
            return bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        except OSError:
            return False


def _addr(key: ListenKey) -> tuple[str, int]:
    return key.host, key.port


class FdRegistry:
    """The process's listening fds: the duplicates it holds for its open listeners and the
    ones it inherited from the node it replaced. Thread-safe (a small lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, tuple[ListenKey, int]] = {}  # token -> (key, dup fd)
        self._inherited: dict[ListenKey, int] = {}
        self._tokens = 0
        self._handing_over = False

    # -- the node that is restarting ------------------------------------------------------

    def hold(self, fileno: int, key: ListenKey) -> int | None:
        """Keep a duplicate of a listener's fd (handed over on a restart); a token for
        :meth:`release`, or None for a listener that is not handed over (port 0)."""
        if key.family != socket.AF_UNIX and key.port == 0:
            return None
        fd = os.dup(fileno)  # non-inheritable (PEP 446) until export
        with self._lock:
            self._tokens += 1
            self._held[self._tokens] = (key, fd)
            return self._tokens

    def release(self, token: int | None) -> None:
        """The listener closed: close its duplicate, unless the node is restarting (then
        the socket stays listening until the new node adopts it). Idempotent."""
        if token is None:
            return
        with self._lock:
            if self._handing_over:
                return
            entry = self._held.pop(token, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.close(entry[1])

    def hand_over(self) -> None:
        """The node is about to re-execute: listeners closed from now on stay listening."""
        with self._lock:
            self._handing_over = True

    def export(self, environ: MutableMapping[str, str]) -> int:
        """Mark every held and every not yet adopted inherited fd inheritable and name them
        in ``environ[ENV]`` (call just before the exec); how many."""
        with self._lock:
            entries = {key: fd for key, fd in self._held.values()}
            for key, fd in self._inherited.items():
                entries.setdefault(key, fd)
        listed = []
        for key, fd in entries.items():
            try:
                os.set_inheritable(fd, True)
            except OSError:
                continue
            listed.append([fd, key.family, key.host, key.port])
        if listed:
            environ[ENV] = json.dumps(listed)
        else:
            environ.pop(ENV, None)
        return len(listed)

    # -- the node that started from an exec -----------------------------------------------

    def inherit(self, environ: MutableMapping[str, str]) -> int:
        """Take the fds the node before the exec named in ``environ[ENV]`` (removed from
        ``environ``: nothing the node starts inherits them); entries that are not open
        listening sockets are ignored. How many were taken."""
        raw = environ.pop(ENV, None)
        if not raw:
            return 0
        try:
            items = json.loads(raw)
        except ValueError:
            log.warning("%s is not JSON: ignored", ENV)
            return 0
        taken = 0
        for item in items if isinstance(items, list) else []:
            if not (
                isinstance(item, list)
                and len(item) == 4
                and all(isinstance(v, int) for v in (item[0], item[1], item[3]))
                and isinstance(item[2], str)
            ):
                continue
            fd, family, host, port = item
            if not _is_listening(fd):
                log.warning("%s: fd %d is not a listening socket: ignored", ENV, fd)
                continue
            os.set_inheritable(fd, False)
            with self._lock:
                self._inherited[ListenKey(family, host, port)] = fd
            taken += 1
        return taken

    def adopt(self, key: ListenKey) -> socket.socket | None:
        """The inherited listening socket for ``key`` (the caller owns it now), or None."""
        with self._lock:
            fd = self._inherited.pop(key, None)
        if fd is None:
            return None
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            return None
        s.setblocking(False)
        log.info("adopted the listening socket of %s:%s from before the restart", *_addr(key))
        return s

    def adopt_tcp(self, host: str | None, port: int) -> socket.socket | None:
        """:meth:`adopt` for a TCP listener on ``host:port``, whichever its family."""
        for family in (socket.AF_INET, socket.AF_INET6):
            s = self.adopt(ListenKey(family, host or "", port))
            if s is not None:
                return s
        return None

    def close_unadopted(self) -> list[ListenKey]:
        """Close the inherited fds no code adopted (call once the node has booted)."""
        with self._lock:
            left, self._inherited = self._inherited, {}
        for key, fd in left.items():
            log.info("closing the inherited listener on %s:%s (nothing listens there)", *_addr(key))
            with contextlib.suppress(OSError):
                os.close(fd)
        return list(left)


def tcp_key(family: int, host: str | None, port: int) -> ListenKey:
    """The key of a TCP listener asked for as ``host:port`` (its socket's ``family``)."""
    return ListenKey(int(family), host or "", port)


registry = FdRegistry()
"""The process's registry (the fds and the environment are per process)."""
