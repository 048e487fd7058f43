"""Hostile variants of a good release tarball, for unpack/deploy refusal tests."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path


def _members(good: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out = []
    with tarfile.open(good, "r:gz") as t:
        for m in t:
            f = t.extractfile(m) if m.isreg() else None
            out.append((m, f.read() if f else None))
    return out


def _write(out: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as t:
        for m, data in members:
            t.addfile(m, io.BytesIO(data) if data is not None else None)
    out.write_bytes(gzip.compress(raw.getvalue()))
    return out


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    return ti, data


def hostile_tarball(good: Path, out: Path, kind: str) -> Path:
    """A copy of ``good`` made hostile in one way (``kind``)."""
    members = _members(good)
    lib = next("/".join(m.name.split("/")[:2]) for m, _ in members if m.name.startswith("lib/"))
    if kind == "truncated":
        data = good.read_bytes()
        out.write_bytes(data[: len(data) // 2])
        return out
    if kind == "dotdot":
        members.append(_file("lib/../../evil.txt", b"x"))
    elif kind == "absolute":
        members.append(_file("/tmp/evil.txt", b"x"))
    elif kind in ("symlink", "hardlink"):
        ti = tarfile.TarInfo(f"{lib}/link.py")
        ti.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        ti.linkname = "/etc/passwd"
        members.append((ti, None))
    elif kind == "device":
        ti = tarfile.TarInfo(f"{lib}/dev")
        ti.type = tarfile.CHRTYPE
        ti.devmajor, ti.devminor = 1, 3
        members.append((ti, None))
    elif kind == "unlisted":
        members.append(_file(f"{lib}/extra.py", b"print('sneaky')\n"))
    elif kind == "mismatch":
        i = next(
            i
            for i, (m, _) in enumerate(members)
            if m.name.startswith("lib/") and m.name.endswith(".py")
        )
        m, data = members[i]
        assert data is not None
        evil = data + b"\nimport os  # injected\n"
        m.size = len(evil)
        members[i] = (m, evil)
    else:
        raise ValueError(kind)
    # SHA256SUMS stays as it was: that is the point
    return _write(out, members)
