"""Build, deploy and scaffold through the real CLI (issue: release build)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.hostile import hostile_tarball
from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = pytest.mark.e2e


def j(*args: str, env: dict[str, str] | None = None) -> Any:
    r = cli(*args, "--json") if env is None else _cli_env(env, *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _cli_env(env: dict[str, str], *args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "relhandler.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_new_build_deploy_start_status(tmp_path: Path, nodes: list[NodeProc]) -> None:
    proj = tmp_path / "hello"
    j("new", "hello", "--dir", str(proj))
    res = j("build", "--project", str(proj))
    tar = Path(res["tarball"])
    assert tar.name == "hello-0.1.0.tar.gz"
    assert hashlib.sha256(tar.read_bytes()).hexdigest() == res["sha256"]
    root = tmp_path / "root"
    j("deploy", str(tar), "--root", str(root))
    nodes.append(start_node(root))
    st = j("status", "--root", str(root))
    assert st["release"] == {"name": "hello", "version": "0.1.0"}
    assert [a["name"] for a in st["applications"]] == ["hello"]
    r = cli("rpc", "hello.server:hello", '["Ada"]', "--root", str(root))
    assert r.stdout.strip() == '"Hello, Ada!"'


def test_rebuilds_are_byte_identical_and_epoch_changes_only_mtimes(tmp_path: Path) -> None:
    proj = tmp_path / "p"
    j("new", "p", "--dir", str(proj))
    a = Path(j("build", "--project", str(proj), "--out", str(tmp_path / "a"))["tarball"])
    b = Path(j("build", "--project", str(proj), "--out", str(tmp_path / "b"))["tarball"])
    assert a.read_bytes() == b.read_bytes()
    c = Path(
        j(
            "build",
            "--project",
            str(proj),
            "--out",
            str(tmp_path / "c"),
            env={"SOURCE_DATE_EPOCH": "1700000000"},
        )["tarball"]
    )
    assert c.read_bytes() != a.read_bytes()

    def members(p: Path) -> list[tuple[str, int, int, int, str, str, bytes | None]]:
        with tarfile.open(p) as t:
            return [
                (
                    m.name,
                    m.mode,
                    m.uid,
                    m.gid,
                    m.uname,
                    m.gname,
                    t.extractfile(m).read() if m.isreg() else None,
                )  # type: ignore[union-attr]
                for m in t
            ]

    assert members(a) == members(c)
    with tarfile.open(c) as t:
        assert {m.mtime for m in t} == {1700000000}
    with tarfile.open(a) as t:
        names = [m.name for m in t]
        assert names == sorted(names)
        assert all(not m.issym() and not m.islnk() for m in t)


def _wheel(dist: Path) -> Path:
    """A tiny pure-Python wheel, made by hand (no network, no build backend)."""
    name, vsn = "rh_testdep", "1.2.3"
    files = {
        f"{name}/__init__.py": b"ANSWER = 42\n",
        f"{name}-{vsn}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
        f"Version: {vsn}\n".encode(),
        f"{name}-{vsn}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for f, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{f},sha256={digest},{len(data)}")
    record.append(f"{name}-{vsn}.dist-info/RECORD,,")
    files[f"{name}-{vsn}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    dist.mkdir()
    whl = dist / f"{name}-{vsn}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for f, data in files.items():
            z.writestr(f, data)
    return whl


def test_bundled_dependency_is_importable_on_the_node(
    tmp_path: Path, nodes: list[NodeProc]
) -> None:
    dist = tmp_path / "dist"
    _wheel(dist)
    proj = tmp_path / "dep"
    j("new", "dep", "--dir", str(proj))
    py = proj / "pyproject.toml"
    py.write_text(
        py.read_text()
        .replace("dependencies = []", 'dependencies = ["rh_testdep"]')
        .replace('config = "config/sys.toml"', 'config = "config/sys.toml"\ninclude_deps = true')
    )
    (proj / "src/dep/uses_dep.py").write_text(
        "import rh_testdep\n\ndef answer():\n    return rh_testdep.ANSWER\n"
    )
    env = {"PIP_FIND_LINKS": str(dist), "PIP_NO_INDEX": "1"}
    res = j("build", "--project", str(proj), env=env)
    assert res["deps"].startswith("deps-")
    again = j("build", "--project", str(proj), "--out", str(tmp_path / "again"), env=env)
    assert again["deps"] == res["deps"]  # content-addressed
    root = tmp_path / "root"
    j("deploy", res["tarball"], "--root", str(root))
    assert (root / "lib" / res["deps"] / "rh_testdep" / "__init__.py").is_file()
    nodes.append(start_node(root))
    r = cli("rpc", "dep.uses_dep:answer", "[]", "--root", str(root))
    assert r.stdout.strip() == "42", r.stderr


@pytest.mark.parametrize(
    "kind",
    ["dotdot", "absolute", "symlink", "hardlink", "device", "unlisted", "mismatch", "truncated"],
)
def test_deploy_refuses_hostile_tarballs_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    proj = tmp_path / "sample"
    j("new", "sample", "--dir", str(proj))
    good = Path(j("build", "--project", str(proj))["tarball"])
    bad = hostile_tarball(good, tmp_path / "bad.tar.gz", kind)
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep.txt").write_text("untouched")
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    r = cli("deploy", str(bad), "--root", str(root))
    assert r.returncode == 2, (kind, r.stdout, r.stderr)
    assert r.stderr.startswith("Error: ")
    assert r.stderr.count("\n") == 1
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before
    assert (root / "keep.txt").read_text() == "untouched"
