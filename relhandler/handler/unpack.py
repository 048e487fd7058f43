"""Putting a release tarball into a release root: ``deploy`` (first install, no node) and
``unpack`` (next to a running release). Both verify everything before writing anything.

The files go through a staging directory inside the root (``.unpack-*``), are fsynced with
their directories, and complete directories are renamed into place; only then is the release
recorded in RELEASES.toml. The whole operation runs under the intent journal
(:mod:`relhandler.handler.journal`): a crash at any instant is undone at the next boot or
operation, so the same unpack can simply be run again.
"""

from __future__ import annotations

import os
import pickle
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from relhandler.errors import ReleaseError, ReleaseInputError, TarballError, UsageError
from relhandler.handler import journal, store
from relhandler.release.deps import runtime_conflict
from relhandler.release.model import ReleaseSpec
from relhandler.release.tarball import (
    DEFAULT_LIMITS,
    Limits,
    VerifiedTarball,
    dir_matches,
    extract_into,
)

__all__ = ["Unpacked", "add_release", "deploy", "record_of", "unpack"]


@dataclass(frozen=True, slots=True)
class Unpacked:
    version: str
    name: str
    written: tuple[str, ...]
    already: bool = False


def record_of(rel: ReleaseSpec, status: store.Status) -> store.ReleaseRecord:
    return store.ReleaseRecord(
        rel.name,
        rel.version,
        status,
        rel.python,
        tuple(store.AppRecord(a.name, a.version, f"lib/{a.dir_name}") for a in rel.apps),
        rel.deps,
    )


VERIFY_MEMORY = 512 << 20
"""Address space of the verifier child: tarfile reads a pax or GNU long-name header whole,
before any member limit applies (a 500 KB tarball declaring a 512 MiB header took 1 GiB)."""

_VERIFY = """
import pathlib, pickle, resource, sys
from relhandler.errors import RelhandlerError, TarballError
from relhandler.release.tarball import Limits, verify_tarball
path, n, b, m, mem = sys.argv[1:]
resource.setrlimit(resource.RLIMIT_AS, (int(mem), int(mem)))
try:
    out = verify_tarball(pathlib.Path(path), limits=Limits(int(n), int(b), int(m)))
except RelhandlerError as e:
    out = e
except MemoryError:
    out = TarballError(
        f"{path}: reading it takes more than {int(mem) >> 20} MiB (a tar header that big "
        f"holds no release); refused"
    )
sys.stdout.buffer.write(pickle.dumps(out))
"""


def verify_apart(tarball: Path, *, limits: Limits = DEFAULT_LIMITS) -> VerifiedTarball:
    """``verify_tarball`` in a child Python (isolated mode): the node's disk thread only
    waits, so a hostile tarball's parsing never competes with the event loop for the GIL,
    and its memory is the child's, at most ``VERIFY_MEMORY``. Raises what
    ``verify_tarball`` raises."""
    argv = [
        sys.executable,
        "-I",
        "-c",
        _VERIFY,
        str(tarball.absolute()),
        str(limits.max_members),
        str(limits.max_bytes),
        str(limits.max_meta_bytes),
        str(VERIFY_MEMORY),
    ]
    r = subprocess.run(argv, capture_output=True, check=False)
    if r.returncode != 0 or not r.stdout:
        tail = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ReleaseError(f"unpack {tarball.name}: the verifier failed: {tail[0]}")
    out = pickle.loads(r.stdout)  # our own child's answer, not bytes from the tarball
    if isinstance(out, BaseException):
        raise out
    assert isinstance(out, VerifiedTarball)
    return out


def bundled_dists(v: VerifiedTarball) -> list[tuple[str, str]]:
    """The (name, version) of every distribution the tarball bundles: those its
    release.toml lists, and every ``*.dist-info`` directory in its lib dirs."""
    out = {(d.name, d.version) for d in v.release.dists or ()}
    for f in v.digests:
        parts = f.split("/")
        if len(parts) >= 4 and parts[0] == "lib" and parts[2].endswith(".dist-info"):
            name, sep, version = parts[2].removesuffix(".dist-info").rpartition("-")
            if sep and name:
                out.add((name, version))
    return sorted(out)


def _check_fits(v: VerifiedTarball, rels: store.Releases) -> None:
    """Refuse a release this Python cannot run, one that bundles another version of a
    distribution the node runs on (it would import the node's), or one whose version equals
    (PEP 440) a listed one under another spelling (``2.0`` beside ``2.0.0``: which one would
    ``install 2.0`` mean?)."""
    where = f"{v.path}: releases/{v.version}/release.toml"
    try:
        spec = SpecifierSet(v.release.python)
    except InvalidSpecifier as e:
        raise TarballError(
            f"{where}: python {v.release.python!r} is not a version specifier; rebuild with "
            f'e.g. requires-python = ">=3.11"'
        ) from e
    here = platform.python_version()
    if not spec.contains(here, prereleases=True):
        raise ReleaseError(
            f"{where}: the release needs Python {v.release.python}, this host runs {here}; "
            f"build it for this Python or run the node on one that matches",
            code="python_mismatch",
        )
    conflict = runtime_conflict(bundled_dists(v))
    if conflict is not None:
        raise ReleaseInputError(
            f"{v.path}: {conflict}, and build it again (this relhandler's build refuses it)",
            code="dep_conflict",
        )
    mine = Version(v.version)
    for r in rels.releases:
        try:
            same = r.version != v.version and Version(r.version) == mine
        except InvalidVersion:
            continue
        if same:
            raise TarballError(
                f"{where}: version {v.version} equals the listed release {r.version} "
                f"(PEP 440); give the new build a new version",
                code="equal_version",
            )


def same_as_installed(v: VerifiedTarball, root: Path) -> bool:
    """Is release ``v.version`` on ``root`` this very build (same SHA256SUMS)?"""
    sums = root / "releases" / v.version / "SHA256SUMS"
    return sums.is_file() and sums.read_bytes() == v.sums


def add_release(
    v: VerifiedTarball,
    root: Path,
    rels: store.Releases,
    *,
    op: str = "unpack",
    start: store.StartFile | None = None,
) -> tuple[store.Releases, list[str]]:
    """Write ``v``'s new directories into ``root`` and record ``rels`` plus the release,
    crash-safely; returns the new releases and the directories written.

    An existing identical lib dir is kept; a different one is refused."""
    if rels.get(v.version) is not None:
        raise ReleaseInputError(f"release {v.version!r} already exists", code="existing_release")
    rel_dir = f"releases/{v.version}"
    if os.path.lexists(root / rel_dir):
        raise ReleaseInputError(
            f"{root / rel_dir} exists but RELEASES.toml does not list it (not left by "
            f"relhandler: move it out of the root, then {op} again)",
            code="existing_release",
        )
    new_dirs = []
    for d in v.lib_dirs():
        target = root / d
        if os.path.lexists(target):
            if not dir_matches(target, v, d):
                raise ReleaseInputError(
                    f"{target} exists with different content; a lib dir is never overwritten "
                    f"(give the changed application a new version)",
                    code="lib_dir_conflict",
                )
        else:
            new_dirs.append(d)
    new_dirs.append(rel_dir)
    status: store.Status = "permanent" if start is not None else "unpacked"
    new = store.Releases((record_of(v.release, status), *rels.releases))

    def prepare() -> None:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
        extract_into(v, staging, only=new_dirs)
        for top in ("lib", "releases"):
            if not (root / top).is_dir():
                (root / top).mkdir()
                store.fsync_dir(root)
        for d in new_dirs:
            with store.named(root / d):
                os.replace(staging / d, root / d)
        for top in ("lib", "releases"):
            store.fsync_dir(root / top)

    intent = journal.Intent(
        op,
        v.version,
        files=tuple(journal.changes(root, new, start)),
        created=tuple(new_dirs),
    )
    journal.transact(root, f"{op} {v.version}", intent, prepare)
    return new, [str(root / d) for d in new_dirs]


def deploy(tarball: Path, root: Path, *, limits: Limits = DEFAULT_LIMITS) -> Unpacked:
    """First install on a host: the release becomes permanent and boots at ``start``."""
    if os.path.lexists(root) and not root.is_dir():
        raise UsageError(f"--root {root} is not a directory; name a new or existing directory")
    v = verify_apart(tarball, limits=limits)
    pending = journal.read_journal(root) if root.is_dir() else None
    # a deploy interrupted before: undo or finish it, also past the write of RELEASES.toml
    # (no node booted the root since: a boot recovers it). Never another op's journal: a
    # node may be running that op
    if root.is_dir() and (
        (pending is not None and pending.op == "deploy") or not store.read_releases(root).releases
    ):
        try:
            journal.recover(root)
        except OSError as e:
            raise journal.io_error(f"deploy {v.version}", e, "pending") from e
    rels = store.read_releases(root)
    _check_fits(v, rels)
    if rels.releases:
        if [r.version for r in rels.releases] == [v.version] and same_as_installed(v, root):
            return Unpacked(v.version, v.release.name, (), already=True)
        raise ReleaseInputError(
            f"{root} already has releases ({', '.join(r.version for r in rels.releases)}); "
            f"deploy is for a first install — use `relhandler unpack` / `upgrade` on the node",
            code="already_deployed",
        )
    _, written = add_release(v, root, rels, op="deploy", start=store.StartFile(v.version))
    return Unpacked(v.version, v.release.name, tuple(written))


def unpack(tarball: Path, root: Path, *, limits: Limits = DEFAULT_LIMITS) -> Unpacked:
    """Add a release as ``unpacked``; the same tarball again is a no-op.

    Runs on the caller's thread (the node runs it in an executor): it recovers an
    interrupted operation first, then reads and writes only the disk."""
    try:
        journal.recover(root)
    except OSError as e:
        raise journal.io_error(f"unpack {tarball.name}", e, "pending") from e
    v = verify_apart(tarball, limits=limits)
    rels = store.read_releases(root)
    _check_fits(v, rels)
    rec = rels.get(v.version)
    if rec is not None:
        if same_as_installed(v, root):
            return Unpacked(v.version, v.release.name, (), already=True)
        if rec.status == "unpacked":
            # typically a rebuild after a failed upgrade (the relup was forgotten)
            fix = (
                f"it was never installed: remove it with `relhandler remove {v.version}` "
                f"and unpack again, or run `relhandler upgrade {tarball} --replace`"
            )
        else:
            fix = f"it is {rec.status} on this node: give the new build a new version"
        raise ReleaseInputError(
            f"release {v.version} is already on this node with different content; {fix}",
            code="existing_release",
            details={"version": v.version, "status": rec.status},
        )
    _, written = add_release(v, root, rels)
    return Unpacked(v.version, v.release.name, tuple(written))
