"""Hostile variants of a good release tarball, for unpack/deploy refusal tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import zlib
from collections.abc import Callable, Mapping
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
    elif kind == "file_and_dir":
        members.append(_file(f"{lib}/{lib.split('/')[1].rsplit('-', 1)[0]}", b"x"))
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


def crafted_tarball(
    good: Path,
    out: Path,
    *,
    version: str | None = None,
    edit: Callable[[str], str] = lambda text: text,
    extra: Mapping[str, bytes] | None = None,
) -> Path:
    """A copy of ``good`` with its release renamed to ``version``, its release.toml run
    through ``edit`` and the ``extra`` files added, SHA256SUMS recomputed: checksums are
    self-declared, so anyone can make a tarball that verifies (what ``unpack`` must still
    refuse is in the names)."""
    members = _members(good) + [_file(n, d) for n, d in (extra or {}).items()]
    old = next(m.name.split("/")[1] for m, _ in members if m.name.startswith("releases/"))
    new = version or old
    files: dict[str, bytes] = {}
    renamed: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for m, data in members:
        parts = m.name.split("/")
        if parts[0] == "releases" and len(parts) > 1 and parts[1] == old:
            parts[1] = new
            m.name = "/".join(parts)
        if data is not None and m.name == f"releases/{new}/release.toml":
            text = data.decode().replace(f'version = "{old}"', f'version = "{new}"', 1)
            data = edit(text).encode()
            m.size = len(data)
        if data is not None:
            files[m.name] = data
        renamed.append((m, data))
    sums_name = f"releases/{new}/SHA256SUMS"
    sums = "".join(
        f"{hashlib.sha256(d).hexdigest()}  {n}\n"
        for n, d in sorted(files.items())
        if n != sums_name
    ).encode()
    for i, (m, _) in enumerate(renamed):
        if m.name == sums_name:
            m.size = len(sums)
            renamed[i] = (m, sums)
    return _write(out, renamed)


def gzip_bomb(out: Path, *, member_bytes: int, sizes: tuple[int, ...]) -> Path:
    """A small ``.tar.gz`` that unpacks to files of zeros, the i-th of
    ``member_bytes * sizes[i]`` bytes.

    Written in milliseconds: one deflated MiB of zeros, ended by a full flush (so it refers to
    nothing before it), is repeated as often as needed; tar headers are deflated between full
    flushes too. The trailer's CRC is not computed: a reader must refuse the bomb long before
    it gets there."""
    mib = 1 << 20
    assert member_bytes % mib == 0
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = block.compress(bytes(mib)) + block.flush(zlib.Z_FULL_FLUSH)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"]  # gzip header, no name, mtime 0
    for i, k in enumerate(sizes):
        ti = tarfile.TarInfo(f"lib/bomb-1.0.0/zeros{i}")
        ti.size = member_bytes * k
        ti.mode = 0o644
        parts.append(co.compress(ti.tobuf(format=tarfile.GNU_FORMAT)) + co.flush(zlib.Z_FULL_FLUSH))
        parts.append(zeros * (ti.size // mib))
    parts.append(co.compress(bytes(1024)) + co.flush(zlib.Z_FINISH))
    parts.append(struct.pack("<II", 0, (member_bytes * sum(sizes) + 1024) & 0xFFFFFFFF))
    out.write_bytes(b"".join(parts))
    return out


def many_members(out: Path, n: int) -> Path:
    """A ``.tar.gz`` of ``n`` empty files (a member-count bomb); headers patched from one
    template (TarInfo.tobuf per member would take seconds)."""
    base = bytearray(tarfile.TarInfo("lib/many-1.0.0/f0000000").tobuf(format=tarfile.GNU_FORMAT))
    raw = bytearray()
    for i in range(n):
        h = bytearray(base)
        h[15:23] = f"f{i:07d}".encode()
        h[148:156] = b" " * 8
        h[148:156] = f"{sum(h):06o}\0 ".encode()
        raw += h
    raw += bytes(1024)
    out.write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    return out


def pax_bomb(out: Path, *, header_mib: int) -> Path:
    """A ``.tar.gz`` of under 1 MB whose first member is a pax extended header declaring
    ``header_mib`` MiB of zeros: tarfile reads such a header whole, before the member it
    describes (and so before any member limit) is seen."""
    mib = 1 << 20
    ti = tarfile.TarInfo("././@PaxHeader")
    ti.type = tarfile.XHDTYPE
    ti.size = header_mib * mib
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = block.compress(bytes(mib)) + block.flush(zlib.Z_FULL_FLUSH)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = co.compress(ti.tobuf(format=tarfile.USTAR_FORMAT)) + co.flush(zlib.Z_FULL_FLUSH)
    tail = co.compress(bytes(1024)) + co.flush(zlib.Z_FINISH)
    gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip header, no name, mtime 0
    out.write_bytes(gz + head + zeros * header_mib + tail + struct.pack("<II", 0, 0))
    return out
