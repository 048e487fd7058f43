"""Release tarballs: reproducible writing, paranoid verification, safe extraction.

Layout (formats.md §3): ``releases/<vsn>/…`` plus every ``lib/`` directory the release uses.
The same inputs give a byte-identical file: entries sorted by path, one mtime
(``SOURCE_DATE_EPOCH`` or a fixed epoch), uid/gid 0 with empty owner names, modes
0644/0755, GNU format (no pax timestamps), gzip header with mtime 0 and no file name.

``verify_tarball`` streams the archive once, in bounded memory, and checks every member
(names, types, the member-count and size limits while reading, checksums) before anything is
written; it keeps only the checksums and the small release metadata. ``extract_into`` streams
it a second time into a fresh directory, checking every file against the checksums verified
in the first pass (a tarball changed in between is refused) and fsyncing files and
directories. Putting the result into a release root is the handler's job (``handler/unpack``).

Limits (``Limits``, checked while reading, from the tar headers, before a member's data is
read): at most 100,000 members and 2 GiB of file data once unpacked; a release's metadata
files under ``releases/<vsn>/`` at most 16 MiB each. A gzip bomb is refused after reading at
most the size limit, in constant memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import tarfile
import tomllib
import zlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from relhandler.errors import TarballError
from relhandler.release.model import ReleaseSpec, parse_release

__all__ = [
    "DEFAULT_EPOCH",
    "DEFAULT_LIMITS",
    "Limits",
    "VerifiedTarball",
    "dir_matches",
    "extract_into",
    "sha256sums",
    "source_date_epoch",
    "tree_files",
    "verify_tarball",
    "write_tarball",
]

DEFAULT_EPOCH = 315532800  # 1980-01-01, the zip epoch; any fixed value would do
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    """What a tarball may hold (checked while reading, before a member's data is read)."""

    max_members: int = 100_000  # a release with a big dependency tree holds ~20,000 files
    max_bytes: int = 2 << 30  # file data once unpacked
    max_meta_bytes: int = 16 << 20  # each file under releases/<vsn>/ (kept in memory)


DEFAULT_LIMITS = Limits()


def source_date_epoch() -> int:
    v = os.environ.get("SOURCE_DATE_EPOCH")
    try:
        return int(v) if v else DEFAULT_EPOCH
    except ValueError:
        return DEFAULT_EPOCH


def tree_files(root: Path, rel_dirs: Iterable[str]) -> list[str]:
    """Every regular file below ``root/<rel_dir>`` as sorted relative POSIX paths."""
    out: list[str] = []
    for d in rel_dirs:
        base = root / d
        for p in base.rglob("*"):
            if "__pycache__" in p.parts or p.suffix == ".pyc":
                continue
            if p.is_symlink():
                raise TarballError(f"{p}: symlinks are not allowed in a release")
            if p.is_file():
                out.append(p.relative_to(root).as_posix())
    return sorted(out)


def sha256sums(root: Path, files: Iterable[str]) -> str:
    """``sha256sum``-compatible text for ``files`` (paths relative to ``root``)."""
    lines = []
    for f in sorted(files):
        h = hashlib.sha256((root / f).read_bytes()).hexdigest()
        lines.append(f"{h}  {f}\n")
    return "".join(lines)


def write_tarball(
    root: Path, rel_dirs: Iterable[str], out: Path, *, mtime: int | None = None
) -> Path:
    """Write a reproducible ``.tar.gz`` of ``rel_dirs`` (relative to ``root``) to ``out``."""
    epoch = source_date_epoch() if mtime is None else mtime
    files = tree_files(root, rel_dirs)
    dirs: set[str] = set()
    for f in files:
        parts = f.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(dirs | set(files)):
            ti = tarfile.TarInfo(name)
            ti.mtime = epoch
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            p = root / name
            if name in dirs:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tar.addfile(ti)
            else:
                data = p.read_bytes()
                ti.size = len(data)
                ti.mode = 0o755 if os.access(p, os.X_OK) else 0o644
                tar.addfile(ti, io.BytesIO(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    # no file name and mtime 0 in the gzip header: the bytes depend on the content only
    with open(tmp, "wb") as fh:
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0)
        gz.write(raw.getvalue())
        gz.close()
    os.replace(tmp, out)
    return out


@dataclass(frozen=True, slots=True)
class VerifiedTarball:
    """A tarball whose every member passed verification: its checksums, not its data."""

    path: Path
    version: str
    release: ReleaseSpec
    digests: dict[str, str]  # every regular file -> sha256 hex
    sums: bytes  # releases/<vsn>/SHA256SUMS
    dirs: frozenset[str] = field(default_factory=frozenset)

    def lib_dirs(self) -> list[str]:
        return sorted({"/".join(f.split("/")[:2]) for f in self.digests if f.startswith("lib/")})


def _safe_name(name: str) -> str:
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise TarballError(f"member {name!r} has an absolute or malformed path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        # a line break would split its SHA256SUMS line; an escape sequence would reach logs
        raise TarballError(f"member {name!r} has a control character in its name; refused")
    norm = posixpath.normpath(name)
    if norm.startswith("../") or norm == ".." or "/../" in f"/{name}/":
        raise TarballError(f"member {name!r} escapes the release root ('..')")
    if norm != name.rstrip("/"):
        raise TarballError(f"member {name!r} is not a normalised relative path")
    top = norm.split("/")[0]
    if top not in ("releases", "lib"):
        raise TarballError(f"member {name!r} is outside releases/ and lib/")
    return norm


def _members(
    path: Path, tar: tarfile.TarFile, limits: Limits
) -> Iterator[tuple[str, tarfile.TarInfo]]:
    """Each member, checked (name, type, limits) before its data is read."""
    total = 0
    n = 0
    while True:
        m = tar.next()
        if m is None:
            return
        # tarfile keeps every TarInfo it read (not in typeshed): keep memory flat
        tar.members.clear()  # type: ignore[attr-defined]
        n += 1
        if n > limits.max_members:
            raise TarballError(
                f"{path}: more than {limits.max_members} members; refused (a release holds "
                f"fewer; split the dependencies out)"
            )
        name = _safe_name(m.name)
        if m.issym() or m.islnk():
            raise TarballError(
                f"{path}: member {m.name!r} is a link; releases hold "
                f"only regular files and directories"
            )
        if not (m.isdir() or m.isreg()):
            raise TarballError(
                f"{path}: member {m.name!r} is a device, fifo or other special file; refused"
            )
        if m.isreg():
            total += m.size
            if total > limits.max_bytes:
                raise TarballError(
                    f"{path}: unpacks to more than {limits.max_bytes} bytes; refused "
                    f"(a gzip bomb, or a release too big for one tarball)"
                )
        yield name, m


def _read(path: Path, tar: tarfile.TarFile, m: tarfile.TarInfo) -> Iterator[bytes]:
    f = tar.extractfile(m)
    assert f is not None
    got = 0
    while chunk := f.read(_CHUNK):
        got += len(chunk)
        yield chunk
    if got != m.size:
        raise TarballError(f"{path}: member {m.name!r} is truncated")


def _corrupt(path: Path, e: BaseException) -> TarballError:
    return TarballError(f"{path}: truncated or corrupt archive ({e}); rebuild or download it again")


def verify_tarball(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> VerifiedTarball:
    """Check everything, write nothing; raises ``TarballError`` naming the member and fix.

    Streams the archive once: memory holds the checksums and the ``releases/<vsn>/``
    metadata, never the files."""
    if not path.is_file():
        raise TarballError(f"{path}: no such file", code="no_such_file")
    digests: dict[str, str] = {}
    meta: dict[str, bytes] = {}
    dirs: set[str] = set()
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for name, m in _members(path, tar, limits):
                parts = name.split("/")
                dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
                if m.isdir():
                    dirs.add(name)
                    continue
                if name in digests:
                    raise TarballError(f"{path}: member {m.name!r} appears twice")
                keep = name.startswith("releases/") and len(parts) == 3
                if keep and m.size > limits.max_meta_bytes:
                    raise TarballError(
                        f"{path}: {name} is {m.size} bytes; release metadata is at most "
                        f"{limits.max_meta_bytes}"
                    )
                h = hashlib.sha256()
                buf = bytearray()
                for chunk in _read(path, tar, m):
                    h.update(chunk)
                    if keep:
                        buf += chunk
                digests[name] = h.hexdigest()
                if keep:
                    meta[name] = bytes(buf)
    except TarballError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise _corrupt(path, e) from e
    clash = sorted(set(digests) & dirs)
    if clash:
        raise TarballError(
            f"{path}: {clash[0]!r} is both a file and a directory in the tarball; refused "
            f"(rebuild it)"
        )
    rels = sorted(
        {f.split("/")[1] for f in digests if f.startswith("releases/") and f.count("/") >= 2}
    )
    if len(rels) != 1:
        raise TarballError(
            f"{path}: expected exactly one releases/<vsn>/ directory, found {rels or 'none'}"
        )
    vsn = rels[0]
    sums_name = f"releases/{vsn}/SHA256SUMS"
    if sums_name not in meta:
        raise TarballError(f"{path}: no {sums_name}; not a relhandler release tarball")
    listed: dict[str, str] = {}
    for line in meta[sums_name].decode("utf-8", "replace").splitlines():
        digest, sep, fname = line.partition("  ")
        if not sep:
            raise TarballError(f"{path}: malformed line in {sums_name}: {line!r}")
        listed[fname] = digest
    for fname, digest in sorted(digests.items()):
        if fname == sums_name:
            continue
        if fname not in listed:
            raise TarballError(
                f"{path}: member {fname!r} is not listed in SHA256SUMS (tampered?); refused"
            )
        if digest != listed[fname]:
            raise TarballError(
                f"{path}: checksum mismatch for {fname!r} (tampered or corrupt); refused"
            )
    missing = sorted(set(listed) - set(digests))
    if missing:
        raise TarballError(f"{path}: {missing[0]!r} is listed in SHA256SUMS but missing")
    rel_toml = f"releases/{vsn}/release.toml"
    if rel_toml not in meta:
        raise TarballError(f"{path}: no {rel_toml}")
    try:
        release = parse_release(tomllib.loads(meta[rel_toml].decode()), f"{path}:{rel_toml}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TarballError(f"{path}: {rel_toml} is not valid TOML: {e}") from e
    if release.version != vsn:
        raise TarballError(f"{path}: {rel_toml} says {release.version}, directory says {vsn}")
    for a in release.apps:
        if not any(f.startswith(f"lib/{a.dir_name}/") for f in digests):
            raise TarballError(f"{path}: application dir lib/{a.dir_name}/ is missing")
    if release.deps is not None and not any(f.startswith(f"lib/{release.deps}/") for f in digests):
        raise TarballError(
            f"{path}: {rel_toml} names deps {release.deps!r}, but the tarball has no "
            f"lib/{release.deps}/; rebuild it"
        )
    _check_owned(path, release, set(digests), dirs)
    return VerifiedTarball(path, vsn, release, digests, meta[sums_name], frozenset(dirs))


def _check_owned(path: Path, release: ReleaseSpec, files: set[str], dirs: set[str]) -> None:
    """Every member belongs to the release: under ``releases/<vsn>/``, an application's lib
    dir or its deps dir. Anything else would be written into the root and left behind by
    ``remove`` (or sit where a later release's lib dir must go)."""
    own = {a.dir_name for a in release.apps} | ({release.deps} if release.deps else set())
    for name in [*sorted(files), *sorted(dirs - files)]:  # a file is the clearer name
        parts = name.split("/")
        if len(parts) == 1:
            continue  # lib/ or releases/ itself
        if parts[0] == "releases" and parts[1] == release.version:
            continue
        if parts[0] == "lib" and parts[1] in own and (len(parts) > 2 or name in dirs):
            continue
        where = (
            f"releases/{release.version}/"
            if parts[0] == "releases"
            else f"the lib dirs of its applications ({', '.join(sorted(own))})"
        )
        raise TarballError(
            f"{path}: member {name!r} is outside {where}; release {release.version} does not "
            f"own it (rebuild the tarball with `relhandler build`)"
        )


def _file_digest(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def dir_matches(existing: Path, v: VerifiedTarball, prefix: str) -> bool:
    """Does ``existing`` hold exactly the files of ``prefix/`` in ``v`` (by checksum)?"""
    want = {f[len(prefix) + 1 :]: d for f, d in v.digests.items() if f.startswith(prefix + "/")}
    have = {
        p.relative_to(existing).as_posix()
        for p in existing.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    if have != set(want):
        return False
    return all(_file_digest(existing / k) == d for k, d in want.items())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def extract_into(
    v: VerifiedTarball,
    dest: Path,
    *,
    only: Collection[str] | None = None,
    durable: bool = True,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """Write the files of ``v`` (those under the top dirs ``only``, default all) below the
    empty directory ``dest``, each checked against the verified checksum while written.

    ``durable``: fsync every file and directory written. Raises ``TarballError`` if the
    tarball changed since it was verified, ``OSError`` if the disk refuses."""
    made: list[Path] = []

    def wanted(name: str) -> bool:
        return only is None or "/".join(name.split("/")[:2]) in only

    def mkdirs(d: Path) -> None:
        missing = []
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for p in reversed(missing):
            p.mkdir()
            made.append(p)

    seen = set()
    try:
        with tarfile.open(v.path, mode="r|gz") as tar:
            for name, m in _members(v.path, tar, limits):
                if m.isdir() or not wanted(name):
                    continue
                if name not in v.digests or name in seen:
                    raise TarballError(f"{v.path}: changed since it was verified; unpack again")
                seen.add(name)
                target = dest / name
                mkdirs(target.parent)
                mode = 0o755 if m.mode & 0o111 else 0o644
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                h = hashlib.sha256()
                fd = os.open(target, flags, mode)
                try:
                    for chunk in _read(v.path, tar, m):
                        h.update(chunk)
                        _write_all(fd, chunk)
                    if durable:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                if h.hexdigest() != v.digests[name]:
                    raise TarballError(f"{v.path}: changed since it was verified; unpack again")
    except TarballError:
        raise
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise _corrupt(v.path, e) from e
    if seen != {n for n in v.digests if wanted(n)}:
        raise TarballError(f"{v.path}: changed since it was verified; unpack again")
    if durable:
        for d in sorted({p.parent for p in made} | set(made) | {dest}, reverse=True):
            _fsync_dir(d)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
