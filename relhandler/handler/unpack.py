"""Putting a release tarball into a release root: ``deploy`` (first install, no node) and
``unpack`` (next to a running release). Both verify everything before writing anything."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from relhandler.errors import ReleaseError
from relhandler.handler import store
from relhandler.release.model import ReleaseSpec
from relhandler.release.tarball import VerifiedTarball, extract, verify_tarball

__all__ = ["Unpacked", "deploy", "record_of", "unpack"]


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


def _same_as_installed(v: VerifiedTarball, root: Path) -> bool:
    sums = root / "releases" / v.version / "SHA256SUMS"
    name = f"releases/{v.version}/SHA256SUMS"
    return (
        sums.is_file()
        and hashlib.sha256(sums.read_bytes()).digest() == hashlib.sha256(v.files[name]).digest()
    )


def deploy(tarball: Path, root: Path) -> Unpacked:
    """First install on a host: the release becomes permanent and boots at ``start``."""
    v = verify_tarball(tarball)
    rels = store.read_releases(root)
    if rels.releases:
        raise ReleaseError(
            f"{root} already has releases ({', '.join(r.version for r in rels.releases)}); "
            f"deploy is for a first install — use `relhandler unpack` / `upgrade` on the node",
            code="already_deployed",
        )
    written = extract(v, root)
    store.write_releases(root, store.Releases((record_of(v.release, "permanent"),)))
    store.write_start(root, store.StartFile(v.version))
    return Unpacked(v.version, v.release.name, tuple(str(p) for p in written))


def unpack(tarball: Path, root: Path) -> Unpacked:
    """Add a release as ``unpacked``; the same tarball again is a no-op."""
    v = verify_tarball(tarball)
    rels = store.read_releases(root)
    if rels.get(v.version) is not None:
        if _same_as_installed(v, root):
            return Unpacked(v.version, v.release.name, (), already=True)
        raise ReleaseError(
            f"release {v.version} already exists with different content; "
            f"give the new build a new version",
            code="existing_release",
        )
    written = extract(v, root)
    store.write_releases(root, rels.add_unpacked(record_of(v.release, "unpacked")))
    return Unpacked(v.version, v.release.name, tuple(str(p) for p in written))
