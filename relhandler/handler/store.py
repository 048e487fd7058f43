"""``releases/RELEASES.toml`` and ``releases/start.toml``: the only record of release status.

Both files are only ever replaced atomically (write a temp file in the same directory, fsync
it, rename it over the old one, fsync the directory): a crash at any instant leaves either the
old or the new file, never a torn one. An operation that changes both (make_permanent,
reboot_old, deploy) goes through the intent journal (:mod:`relhandler.handler.journal`),
which boot replays, so the two always agree. Nothing else in relhandler writes them.

As in OTP, ``current`` is a state of the running node, not of the disk: a release installed
but not made permanent is written as ``unpacked``, so a node that restarts boots the permanent
release and shows the other one as ``unpacked`` again (otp/semantics.md §6.1, §6.7).
"""

from __future__ import annotations

import errno
import os
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import tomli_w

from relhandler.errors import ConfigError, ReleaseError, ReleaseInputError
from relhandler.release.model import check_name

__all__ = [
    "STATUSES",
    "AppRecord",
    "ReleaseRecord",
    "Releases",
    "StartFile",
    "atomic_write",
    "describe_os_error",
    "fsync_dir",
    "named",
    "parse_releases",
    "read_releases",
    "read_start",
    "read_text",
    "releases_path",
    "render_releases",
    "render_start",
    "start_path",
    "write_all",
    "write_releases",
    "write_start",
]

Status = Literal["unpacked", "current", "permanent", "old"]
STATUSES: tuple[str, ...] = ("unpacked", "current", "permanent", "old")


@dataclass(frozen=True, slots=True)
class AppRecord:
    name: str
    version: str
    dir: str  # relative to the release root: lib/<name>-<version>


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    """One row of RELEASES.toml."""

    name: str
    version: str
    status: Status
    python: str
    apps: tuple[AppRecord, ...] = ()
    deps: str | None = None


@dataclass(frozen=True, slots=True)
class Releases:
    """Every known release, newest first (as OTP keeps them)."""

    releases: tuple[ReleaseRecord, ...] = ()

    def get(self, vsn: str) -> ReleaseRecord | None:
        for r in self.releases:
            if r.version == vsn:
                return r
        return None

    def require(self, vsn: str) -> ReleaseRecord:
        r = self.get(vsn)
        if r is None:
            known = ", ".join(x.version for x in self.releases) or "none"
            raise ReleaseInputError(
                f"no such release {vsn!r} (known: {known})", code="no_such_release"
            )
        return r

    def with_status(self, status: str) -> tuple[ReleaseRecord, ...]:
        return tuple(r for r in self.releases if r.status == status)

    @property
    def permanent(self) -> ReleaseRecord | None:
        found = self.with_status("permanent")
        return found[0] if found else None

    @property
    def current(self) -> ReleaseRecord | None:
        """The release the node runs: ``current`` if any, else the permanent one."""
        found = self.with_status("current")
        return found[0] if found else self.permanent

    def rows(self) -> list[dict[str, Any]]:
        """The releases as ``relhandler releases`` shows them (and its ``--json``)."""
        return [
            {
                "name": r.name,
                "version": r.version,
                "status": r.status,
                "apps": [f"{a.name}-{a.version}" for a in r.apps],
            }
            for r in self.releases
        ]

    # -- pure transitions (OTP's status table, otp/semantics.md §6.2) -------------
    def add_unpacked(self, rec: ReleaseRecord) -> Releases:
        if self.get(rec.version) is not None:
            raise ReleaseInputError(
                f"release {rec.version!r} already exists", code="existing_release"
            )
        return Releases((replace(rec, status="unpacked"), *self.releases))

    def set_current(self, vsn: str) -> Releases:
        """``vsn`` becomes the running release; the previously current one becomes old.
        A permanent release stays permanent (otp §6.2)."""
        self.require(vsn)
        out = []
        for r in self.releases:
            if r.version == vsn:
                out.append(r if r.status == "permanent" else replace(r, status="current"))
            elif r.status == "current":
                out.append(replace(r, status="old"))
            else:
                out.append(r)
        return Releases(tuple(out))

    def make_permanent(self, vsn: str) -> Releases:
        r = self.require(vsn)
        if r.status == "permanent":
            return self
        if r.status != "current":
            raise ReleaseError(
                f"release {vsn} is {r.status}; only the current release can be made permanent "
                f"(install it first)",
                code="bad_status",
            )
        out = []
        for x in self.releases:
            if x.version == vsn:
                out.append(replace(x, status="permanent"))
            elif x.status == "permanent":
                out.append(replace(x, status="old"))
            else:
                out.append(x)
        return Releases(tuple(out))

    def reboot_old(self, vsn: str) -> Releases:
        r = self.require(vsn)
        if r.status != "old":
            raise ReleaseError(
                f"release {vsn} is {r.status}; reboot-old takes an old release",
                code="bad_status",
            )
        out = []
        for x in self.releases:
            if x.version == vsn:
                out.append(replace(x, status="permanent"))
            elif x.status in ("permanent", "current"):
                out.append(replace(x, status="old"))
            else:
                out.append(x)
        return Releases(tuple(out))

    def remove(self, vsn: str) -> Releases:
        r = self.require(vsn)
        if r.status in ("permanent", "current"):
            raise ReleaseError(
                f"release {vsn} is {r.status}; only unpacked or old releases can be removed",
                code=r.status,
            )
        return Releases(tuple(x for x in self.releases if x.version != vsn))

    def on_disk(self) -> Releases:
        """What is written: ``current`` is stored as ``unpacked`` (see module docstring)."""
        return Releases(
            tuple(
                replace(r, status="unpacked") if r.status == "current" else r for r in self.releases
            )
        )

    def lib_dirs_in_use(self, *, excluding: str | None = None) -> set[str]:
        dirs: set[str] = set()
        for r in self.releases:
            if r.version == excluding:
                continue
            dirs.update(a.dir for a in r.apps)
            if r.deps:
                dirs.add(f"lib/{r.deps}")
        return dirs


@dataclass(frozen=True, slots=True)
class StartFile:
    """``start.toml``: the permanent release, and an optional one-shot ``next_boot``."""

    permanent: str
    next_boot: str | None = None


def releases_path(root: Path) -> Path:
    return root / "releases" / "RELEASES.toml"


def start_path(root: Path) -> Path:
    return root / "releases" / "start.toml"


@contextmanager
def named(path: Path | str) -> Iterator[None]:
    """Give an ``OSError`` raised inside without a file name (``fsync``, ``write``) ``path``."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def describe_os_error(e: OSError) -> str:
    """``/path: No space left on device (ENOSPC)``: the path and the OS error, one line."""
    name = errno.errorcode.get(e.errno or 0, "")
    what = e.strerror or str(e)
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{what}" + (f" ({name})" if name else "")


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (renames, creations, deletions) durable."""
    with named(path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    if not path.parent.is_dir():
        with named(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
        fsync_dir(path.parent.parent)
    with named(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with named(tmp):
            try:
                write_all(fd, text.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        with named(path):
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_text(path: Path) -> str | None:
    """The text of ``path``; None when there is no such file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e} — the file is corrupt; restore it from a backup") from e


def _str(where: str, d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise ConfigError(f"{where}: key {key!r} must be a string, got {v!r}")
    return v


def read_releases(root: Path) -> Releases:
    """Read ``RELEASES.toml`` (an absent file is no release)."""
    path = releases_path(root)
    if not path.exists():
        return Releases()
    rels = _parse_releases(_load(path), path)
    if not rels.releases:
        # relhandler never writes an empty list: a truncated file must not make the node
        # forget every release but the one it boots
        raise ConfigError(
            f"{path}: lists no release (truncated?); restore it from a backup, or delete it "
            f"to boot the release start.toml names as the only one"
        )
    return rels


def parse_releases(text: str, path: Path) -> Releases:
    """Parse the text of a ``RELEASES.toml`` (``path`` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e} — the file is corrupt; restore it from a backup") from e
    return _parse_releases(data, path)


def _parse_releases(data: dict[str, Any], path: Path) -> Releases:
    unknown = set(data) - {"release"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {sorted(unknown)[0]!r}; expected [[release]] tables"
        )
    out: list[ReleaseRecord] = []
    for i, r in enumerate(data.get("release", [])):
        where = f"{path}: release[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{where} must be a table")
        extra = set(r) - {"name", "version", "status", "python", "apps", "deps"}
        if extra:
            raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}")
        status = _str(where, r, "status")
        if status not in STATUSES:
            raise ConfigError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
        apps = []
        for j, a in enumerate(r.get("apps", [])):
            aw = f"{where}.apps[{j}]"
            if not isinstance(a, dict):
                raise ConfigError(f"{aw} must be a table with name, version, dir")
            d = _str(aw, a, "dir")
            # remove deletes these dirs: each one is a name directly under lib/, never a path
            if not d.startswith("lib/"):
                raise ConfigError(f"{aw}: dir {d!r} is not under lib/; restore the file")
            check_name(aw, "dir", d[4:], "lib directory name")
            apps.append(AppRecord(_str(aw, a, "name"), _str(aw, a, "version"), d))
        deps = r.get("deps")
        if deps is not None:
            check_name(where, "deps", deps, "deps directory name")
        out.append(
            ReleaseRecord(
                name=_str(where, r, "name"),
                version=_str(where, r, "version"),
                status=cast(Status, status),
                python=_str(where, r, "python"),
                apps=tuple(apps),
                deps=deps if isinstance(deps, str) else None,
            )
        )
    if sum(1 for r in out if r.status == "permanent") > 1:
        raise ConfigError(f"{path}: more than one release is permanent; exactly one must be")
    return Releases(tuple(out))


def _dump_releases(rels: Iterable[ReleaseRecord]) -> str:
    rows = []
    for r in rels:
        row: dict[str, Any] = {
            "name": r.name,
            "version": r.version,
            "status": r.status,
            "python": r.python,
            "apps": [{"name": a.name, "version": a.version, "dir": a.dir} for a in r.apps],
        }
        if r.deps:
            row["deps"] = r.deps
        rows.append(row)
    return tomli_w.dumps({"release": rows})


def render_releases(rels: Releases) -> str:
    """The text of ``RELEASES.toml`` for ``rels`` (``current`` stored as ``unpacked``)."""
    return _dump_releases(rels.on_disk().releases)


def write_releases(root: Path, rels: Releases) -> None:
    """Atomically write ``RELEASES.toml`` (``current`` stored as ``unpacked``)."""
    atomic_write(releases_path(root), render_releases(rels))


def read_start(root: Path) -> StartFile | None:
    """Read ``start.toml``; None when there is none."""
    path = start_path(root)
    if not path.exists():
        return None
    data = _load(path)
    extra = set(data) - {"permanent", "next_boot"}
    if extra:
        raise ConfigError(f"{path}: unknown key {sorted(extra)[0]!r}")
    nb = data.get("next_boot")
    return StartFile(_str(str(path), data, "permanent"), nb if isinstance(nb, str) else None)


def render_start(start: StartFile) -> str:
    """The text of ``start.toml``."""
    out: dict[str, str] = {"permanent": start.permanent}
    if start.next_boot:
        out["next_boot"] = start.next_boot
    return tomli_w.dumps(out)


def write_start(root: Path, start: StartFile) -> None:
    """Atomically write ``start.toml`` (alone: for a change that touches only it)."""
    atomic_write(start_path(root), render_start(start))
