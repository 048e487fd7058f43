"""The node's event log: one JSON object per line in ``log/events.jsonl``, rotated by size.

Every release-handler step, every process exit with a non-normal reason, every health
check and every confirm-or-revert decision is an event (docs/events.md; the JSON Schema is
``events.schema.json`` beside this module). Writing an event is one ``os.write`` on an
``O_APPEND`` descriptor, on the caller's turn: cheap, ordered, and visible to a reader as
soon as the op that emitted it returns. It never raises: a full disk, a removed directory or
an unencodable value is swallowed and counted (``dropped``), and the next event that can be
written is preceded by an ``events.lost`` event saying how many were lost.

The reader side (:func:`read_events`, :func:`follow_events`) reads the files directly from
the root, so ``relhandler events`` works without a node.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from relhandler.errors import ConfigError, UsageError

__all__ = [
    "DEFAULT_FILES",
    "DEFAULT_MAX_BYTES",
    "EVENTS_FILE",
    "KINDS",
    "NO_EVENTS",
    "SCHEMA_VERSION",
    "EventLog",
    "event_files",
    "follow_events",
    "log_options",
    "parse_since",
    "read_events",
    "reason_text",
    "schema",
    "schema_text",
]

log = logging.getLogger("relhandler.events")

SCHEMA_VERSION = 1
"""The ``v`` of every event; bumped when a field is removed, renamed or changes meaning."""
EVENTS_FILE = "events.jsonl"
DEFAULT_MAX_BYTES = 1024 * 1024
"""Size past which ``events.jsonl`` is rotated (``$RELHANDLER_EVENTS_MAX_BYTES``)."""
DEFAULT_FILES = 5
"""Files kept: ``events.jsonl`` and ``events.jsonl.1`` … ``.4`` (``$RELHANDLER_EVENTS_FILES``)."""
KINDS = (
    "node.start",
    "node.stop",
    "node.restart",
    "unpack",
    "install.start",
    "install.phase",
    "install.step",
    "install.rollback",
    "install.end",
    "make_permanent",
    "remove",
    "reboot_old",
    "process.exit",
    "health",
    "confirm.pending",
    "confirm.confirmed",
    "confirm.revert",
    "events.lost",
)
REASON_MAX = 500  # characters of an exit reason or error kept in an event


def reason_text(reason: Any) -> str:
    """An exit reason or exception as one short line (``ValueError: bad``, ``'killed'``)."""
    text = (
        f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else repr(reason)
    )
    text = " ".join(text.split())
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


def _jsonable(o: Any) -> Any:
    if isinstance(o, set | frozenset):
        return sorted(map(str, o))
    return str(o)


def _iso(ts: float) -> str:
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def _int_env(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(
            f"{name}={raw!r} must be a whole number >= {minimum}; unset it to use {default}"
        )
    return value


def log_options() -> tuple[int, int]:
    """``(max_bytes, files)`` from the environment (``ConfigError`` on a bad value)."""
    return (
        _int_env("RELHANDLER_EVENTS_MAX_BYTES", DEFAULT_MAX_BYTES, 1024),
        _int_env("RELHANDLER_EVENTS_FILES", DEFAULT_FILES, 1),
    )


class EventLog:
    """Appends events to ``<log_dir>/events.jsonl``; rotates past ``max_bytes``; never raises.

    ``release`` is called for each event: the version the node runs then. ``listeners`` get
    every event (a dict) after it is written or dropped; the confirm window counts crashes
    with one. A listener that raises is removed.
    """

    def __init__(
        self,
        log_dir: Path | None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        files: int = DEFAULT_FILES,
        release: Callable[[], str | None] = lambda: None,
        boot: str | None = None,
    ) -> None:
        self.dir = log_dir
        self.max_bytes = max_bytes
        self.files = files
        self.release = release
        # one run of the node program (an exec starts another): the node's boot_id
        self.boot = boot if boot is not None else secrets.token_hex(8)
        self.seq = 0
        self.written = 0
        self.dropped = 0
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._fd: int | None = None
        self._size = 0
        self._torn = False  # the last write stopped mid-line: start the next on a new line
        self._lost = 0  # dropped since the last event that was written

    @property
    def path(self) -> Path | None:
        return None if self.dir is None else self.dir / EVENTS_FILE

    def emit(self, kind: str, **data: Any) -> dict[str, Any]:
        """Record one event; returns it. Never raises and never waits on anything but a
        local append."""
        self.seq += 1
        ts = time.time()
        try:
            rel = self.release()
        except Exception:
            rel = None
        ev: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "seq": self.seq,
            "ts": ts,
            "time": _iso(ts),
            "boot": self.boot,
            "kind": kind,
            "release": rel,
            "data": data,
        }
        if self.dir is not None:
            try:
                line = json.dumps(ev, default=_jsonable, separators=(",", ":"))
            except (TypeError, ValueError) as e:  # a cycle, a NaN key...: keep the kind
                ev["data"] = {"unencodable": reason_text(e)}
                line = json.dumps(ev, default=_jsonable, separators=(",", ":"))
            self._append(line)
        for fn in list(self.listeners):
            try:
                fn(ev)
            except Exception:
                log.exception("event listener failed; removed")
                with contextlib.suppress(ValueError):
                    self.listeners.remove(fn)
        return ev

    def status(self) -> dict[str, Any]:
        """What ``status`` shows: where events go, how many were written and dropped."""
        return {
            "file": str(self.path) if self.path is not None else None,
            "written": self.written,
            "dropped": self.dropped,
        }

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # -- writing -----------------------------------------------------------------------
    def _append(self, line: str) -> None:
        try:
            if self._lost:
                lost = {
                    "v": SCHEMA_VERSION,
                    "seq": self.seq,
                    "ts": time.time(),
                    "time": _iso(time.time()),
                    "boot": self.boot,
                    "kind": "events.lost",
                    "release": None,
                    "data": {"count": self._lost},
                }
                # the lost-count shares the seq of the event it precedes: seq gaps stay
                # the count of what was lost
                self._write((json.dumps(lost, separators=(",", ":")) + "\n").encode())
                self._lost = 0
            self._write((line + "\n").encode())
            self.written += 1
        except Exception as e:  # OSError above all (ENOSPC, EIO, EROFS...); never raised
            self.dropped += 1
            self._lost += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "cannot write %s (%s); %d event(s) dropped so far",
                    self.path,
                    reason_text(e),
                    self.dropped,
                )
            if isinstance(e, OSError) and e.errno in (errno.EBADF, errno.ENOENT):
                self.close()  # reopen on the next event
            return
        if self._size >= self.max_bytes:
            self._rotate()

    def _open(self) -> int:
        assert self.dir is not None
        if self._fd is None:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.dir / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(fd).st_size
            self._fd = fd
        return self._fd

    def _write(self, data: bytes) -> None:
        fd = self._open()
        if self._torn:
            data = b"\n" + data
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BaseException:
                if len(view) != len(data):
                    self._torn = True  # part of a line is out (nothing out: as it was)
                raise
            self._size += n
            view = view[n:]
        self._torn = False

    def _rotate(self) -> None:
        """events.jsonl → .1 → .2 …; the oldest beyond ``files`` is deleted."""
        assert self.dir is not None
        self.close()
        base = self.dir / EVENTS_FILE
        try:
            if self.files <= 1:
                base.unlink()
            else:
                oldest = self.dir / f"{EVENTS_FILE}.{self.files - 1}"
                oldest.unlink(missing_ok=True)
                for k in range(self.files - 2, 0, -1):
                    src = self.dir / f"{EVENTS_FILE}.{k}"
                    if src.exists():
                        os.replace(src, self.dir / f"{EVENTS_FILE}.{k + 1}")
                os.replace(base, self.dir / f"{EVENTS_FILE}.1")
        except OSError as e:
            log.warning("cannot rotate %s (%s); appending to it", base, reason_text(e))
        self._size = 0


class _NoEvents(EventLog):
    """The event log of a handler that has none (in-process tests): listeners only."""

    def __init__(self) -> None:
        super().__init__(None)


NO_EVENTS: EventLog = _NoEvents()
"""A shared log that writes nothing (do not add listeners to it)."""


# -- the schema --------------------------------------------------------------------------
def schema_text() -> str:
    """The JSON Schema of an event (draft 2020-12), as shipped in the package."""
    return (
        resources.files(__package__ or "relhandler.handler")
        .joinpath("events.schema.json")
        .read_text()
    )


def schema() -> dict[str, Any]:
    out: dict[str, Any] = json.loads(schema_text())
    return out


# -- reading -----------------------------------------------------------------------------
def event_files(log_dir: Path) -> list[Path]:
    """The event files present, oldest first (``events.jsonl.N`` … ``events.jsonl``)."""
    rotated = []
    for p in log_dir.glob(f"{EVENTS_FILE}.*"):
        suffix = p.name[len(EVENTS_FILE) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    out = [p for _, p in sorted(rotated, reverse=True)]
    live = log_dir / EVENTS_FILE
    if live.exists():
        out.append(live)
    return out


def _parse(line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        ev = json.loads(line)
    except ValueError:
        return None  # a line torn by a full disk or a kill
    return ev if isinstance(ev, dict) and "kind" in ev else None


def _after(ev: dict[str, Any], since: float | None) -> bool:
    ts = ev.get("ts")
    return since is None or (isinstance(ts, int | float) and ts >= since)


def read_events(log_dir: Path, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every event in the files, oldest first; torn or foreign lines are skipped."""
    for p in event_files(log_dir):
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            continue  # rotated away while we read
        for line in data.splitlines():
            ev = _parse(line)
            if ev is not None and _after(ev, since):
                yield ev


def _lines_of(data: bytes, since: float | None) -> Iterator[dict[str, Any]]:
    for line in data.split(b"\n"):
        ev = _parse(line)
        if ev is not None and _after(ev, since):
            yield ev


def _rotated(log_dir: Path) -> list[tuple[Path, int]]:
    """The rotated files, oldest first, with their inodes (a rotation keeps an inode)."""
    out = []
    for p in event_files(log_dir):
        if p.name == EVENTS_FILE:
            continue
        with contextlib.suppress(FileNotFoundError):
            out.append((p, p.stat().st_ino))
    return out


SEEN_MAX = 500_000  # event keys a follower remembers (more than the kept files hold)


def follow_events(
    log_dir: Path,
    since: float | None = None,
    *,
    poll: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """What :func:`read_events` yields, then every event appended, until ``stop()``.

    Rotation renames files while we read them, so the follower does not trust one listing:
    whenever the set of rotated files changed it reads them all again and yields only the
    events it has not yielded yet (keyed by boot, seq, kind and time), then opens the live
    file, and starts over if a rotation happened in between. Nothing is lost or yielded
    twice; a line read torn while the node wrote it is yielded late, once its file is read
    again after the next rotation (a stress test sees this about once in 20 bursts of
    rotations 5 events apart)."""
    live = log_dir / EVENTS_FILE
    seen: dict[tuple[Any, ...], None] = {}

    def fresh(data: bytes) -> Iterator[dict[str, Any]]:
        for ev in _lines_of(data, since):
            key = (ev.get("boot"), ev.get("seq"), ev.get("kind"), ev.get("ts"))
            if key in seen:
                continue
            seen[key] = None
            if len(seen) > SEEN_MAX:
                del seen[next(iter(seen))]
            yield ev

    f = None
    ino = None
    buf = b""
    listed: list[int] | None = None  # inodes of the rotated files last read
    while True:
        if f is None:
            rot = _rotated(log_dir)
            inodes = [i for _, i in rot]
            if inodes != listed:
                for p, _ in rot:
                    with contextlib.suppress(FileNotFoundError):
                        yield from fresh(p.read_bytes())
                listed = inodes
            try:
                f = live.open("rb")
            except FileNotFoundError:
                f = None
            else:
                ino = os.fstat(f.fileno()).st_ino
                buf = b""
                if [i for _, i in _rotated(log_dir)] != listed:
                    f.close()  # rotated between the listing and the open: again
                    f = None
                    continue
        if f is not None:
            chunk = f.read()
            if chunk:
                buf += chunk
                cut = buf.rfind(b"\n") + 1
                if cut:
                    yield from fresh(buf[:cut])
                    buf = buf[cut:]
                continue
            try:
                now_ino = live.stat().st_ino
            except FileNotFoundError:
                now_ino = None
            if now_ino != ino:
                rest = f.read()  # written before the rename, read through the old inode
                f.close()
                f = None
                yield from fresh(buf + rest)
                buf = b""
                continue
        if stop():
            if f is not None:
                f.close()
            return
        time.sleep(poll)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``), an ISO 8601
    time (``2026-12-01T14:00:00Z``; no zone means UTC) or Unix seconds; as Unix seconds."""
    now = time.time() if now is None else now
    m = _DURATION.fullmatch(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text!r}: not a time; use a duration (90s, 10m, 2h, 1d), an ISO 8601 "
            f"time (2026-12-01T14:00:00Z) or Unix seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
