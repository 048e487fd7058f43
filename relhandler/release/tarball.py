"""Release tarballs: reproducible writing, paranoid verification, safe extraction.

Layout (formats.md §3): ``releases/<vsn>/…`` plus every ``lib/`` directory the release uses.
The same inputs give a byte-identical file: entries sorted by path, one mtime
(``SOURCE_DATE_EPOCH`` or a fixed epoch), uid/gid 0 with empty owner names, modes
0644/0755, GNU format (no pax timestamps), gzip header with mtime 0 and no file name.

``verify_tarball`` reads the whole archive into memory and checks every member before
anything is written; ``extract`` then writes through a staging directory inside the root and
renames complete directories into place, so a failure leaves the root as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from relhandler.errors import TarballError
from relhandler.release.model import ReleaseSpec, parse_release

__all__ = [
    "DEFAULT_EPOCH",
    "VerifiedTarball",
    "extract",
    "sha256sums",
    "source_date_epoch",
    "tree_files",
    "verify_tarball",
    "write_tarball",
]

DEFAULT_EPOCH = 315532800  # 1980-01-01, the zip epoch; any fixed value would do
MAX_MEMBERS = 100_000
MAX_TOTAL = 2 << 30


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
    """A tarball whose every member passed verification, held in memory."""

    path: Path
    version: str
    release: ReleaseSpec
    files: dict[str, bytes]

    def lib_dirs(self) -> list[str]:
        return sorted({"/".join(f.split("/")[:2]) for f in self.files if f.startswith("lib/")})

    def file(self, rel: str) -> bytes:
        return self.files[rel]


def _safe_name(name: str) -> str:
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise TarballError(f"member {name!r} has an absolute or malformed path")
    norm = posixpath.normpath(name)
    if norm.startswith("../") or norm == ".." or "/../" in f"/{name}/":
        raise TarballError(f"member {name!r} escapes the release root ('..')")
    if norm != name.rstrip("/"):
        raise TarballError(f"member {name!r} is not a normalised relative path")
    top = norm.split("/")[0]
    if top not in ("releases", "lib"):
        raise TarballError(f"member {name!r} is outside releases/ and lib/")
    return norm


def verify_tarball(path: Path) -> VerifiedTarball:
    """Check everything, write nothing; raises ``TarballError`` naming the member and fix."""
    if not path.is_file():
        raise TarballError(f"{path}: no such file", code="no_such_file")
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for n, m in enumerate(tar):
                if n >= MAX_MEMBERS:
                    raise TarballError(f"{path}: more than {MAX_MEMBERS} members")
                name = _safe_name(m.name)
                if m.issym() or m.islnk():
                    raise TarballError(
                        f"{path}: member {m.name!r} is a link; releases hold "
                        f"only regular files and directories"
                    )
                if m.isdir():
                    continue
                if not m.isreg():
                    raise TarballError(
                        f"{path}: member {m.name!r} is a device, fifo or other "
                        f"special file; refused"
                    )
                total += m.size
                if total > MAX_TOTAL:
                    raise TarballError(f"{path}: unpacks to more than {MAX_TOTAL} bytes")
                fobj = tar.extractfile(m)
                assert fobj is not None
                data = fobj.read()
                if len(data) != m.size:
                    raise TarballError(f"{path}: member {m.name!r} is truncated")
                if name in files:
                    raise TarballError(f"{path}: member {m.name!r} appears twice")
                files[name] = data
    except TarballError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise TarballError(
            f"{path}: truncated or corrupt archive ({e}); rebuild or download it again"
        ) from e
    rels = sorted(
        {f.split("/")[1] for f in files if f.startswith("releases/") and f.count("/") >= 2}
    )
    if len(rels) != 1:
        raise TarballError(
            f"{path}: expected exactly one releases/<vsn>/ directory, found {rels or 'none'}"
        )
    vsn = rels[0]
    sums_name = f"releases/{vsn}/SHA256SUMS"
    if sums_name not in files:
        raise TarballError(f"{path}: no {sums_name}; not a relhandler release tarball")
    listed: dict[str, str] = {}
    for line in files[sums_name].decode("utf-8", "replace").splitlines():
        digest, sep, fname = line.partition("  ")
        if not sep:
            raise TarballError(f"{path}: malformed line in {sums_name}: {line!r}")
        listed[fname] = digest
    for fname, data in files.items():
        if fname == sums_name:
            continue
        if fname not in listed:
            raise TarballError(
                f"{path}: member {fname!r} is not listed in SHA256SUMS (tampered?); refused"
            )
        if hashlib.sha256(data).hexdigest() != listed[fname]:
            raise TarballError(
                f"{path}: checksum mismatch for {fname!r} (tampered or corrupt); refused"
            )
    missing = sorted(set(listed) - set(files))
    if missing:
        raise TarballError(f"{path}: {missing[0]!r} is listed in SHA256SUMS but missing")
    rel_toml = f"releases/{vsn}/release.toml"
    if rel_toml not in files:
        raise TarballError(f"{path}: no {rel_toml}")
    import tomllib

    try:
        release = parse_release(tomllib.loads(files[rel_toml].decode()), f"{path}:{rel_toml}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TarballError(f"{path}: {rel_toml} is not valid TOML: {e}") from e
    if release.version != vsn:
        raise TarballError(f"{path}: {rel_toml} says {release.version}, directory says {vsn}")
    for a in release.apps:
        if not any(f.startswith(f"lib/{a.dir_name}/") for f in files):
            raise TarballError(f"{path}: application dir lib/{a.dir_name}/ is missing")
    return VerifiedTarball(path, vsn, release, files)


def _dir_matches(existing: Path, files: dict[str, bytes], prefix: str) -> bool:
    want = {f[len(prefix) + 1 :]: d for f, d in files.items() if f.startswith(prefix + "/")}
    have = {
        p.relative_to(existing).as_posix()
        for p in existing.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    if have != set(want):
        return False
    return all((existing / k).read_bytes() == v for k, v in want.items())


def extract(v: VerifiedTarball, root: Path) -> list[Path]:
    """Write a verified release into ``root``: new lib dirs and ``releases/<vsn>/``.

    An existing identical lib dir is kept; a different one is refused; an existing release
    dir is refused. Everything is staged first, so a failure changes nothing.
    """
    root.mkdir(parents=True, exist_ok=True)
    rel_dir = root / "releases" / v.version
    if rel_dir.exists():
        raise TarballError(f"release {v.version} already exists in {root}", code="existing_release")
    new_libs = []
    for d in v.lib_dirs():
        target = root / d
        if target.exists():
            if not _dir_matches(target, v.files, d):
                raise TarballError(
                    f"{target} exists with different content; a lib dir is never overwritten "
                    f"(give the changed application a new version)"
                )
        else:
            new_libs.append(d)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        for f, data in v.files.items():
            top = "/".join(f.split("/")[:2])
            if top.startswith("lib/") and top not in new_libs:
                continue
            p = staging / f
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        written = []
        (root / "lib").mkdir(exist_ok=True)
        (root / "releases").mkdir(exist_ok=True)
        for d in [*new_libs, f"releases/{v.version}"]:
            os.replace(staging / d, root / d)
            written.append(root / d)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
