"""A release that bundles its own version of a package relhandler runs on (issue 14, shown 5).

The node imports relhandler's own ``packaging`` before any release code, so a bundled
``packaging`` of another version would be shadowed without a word: the build refuses it,
naming both versions, and so do ``unpack`` and ``deploy`` of a tarball built elsewhere (by a
relhandler that ran on the bundled version). The same version is no conflict.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = pytest.mark.e2e


def _wheel(dist: Path, name: str, vsn: str) -> Path:
    """A tiny pure-Python wheel for ``name`` ``vsn``, made by hand (no index, no backend)."""
    files = {
        f"{name}/__init__.py": f"__version__ = {vsn!r}\n".encode(),
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
    dist.mkdir(parents=True, exist_ok=True)
    whl = dist / f"{name}-{vsn}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for f, data in files.items():
            z.writestr(f, data)
    return whl


def _project(tmp: Path, requirement: str) -> Path:
    proj = tmp / "proj"
    r = cli("new", "proj", "--dir", str(proj))
    assert r.returncode == 0, r.stderr
    py = proj / "pyproject.toml"
    text = py.read_text()
    assert "dependencies = []" in text
    py.write_text(text.replace("dependencies = []", f'dependencies = ["{requirement}"]'))
    return proj


# a build host whose relhandler ran on the bundled version: its build sees no conflict
ELSEWHERE = (
    "import relhandler.release.build as b; b.runtime_conflict = lambda _dists: None; "
    "from relhandler.cli import main; main()"
)


def _build(proj: Path, dist: Path, out: Path, *, elsewhere: bool = False) -> tuple[int, str, str]:
    prog = ["-c", ELSEWHERE] if elsewhere else ["-m", "relhandler.cli"]
    r = subprocess.run(
        [
            *(sys.executable, *prog, "build", "--project", str(proj), "--out", str(out)),
            *("--find-links", str(dist), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    return r.returncode, r.stdout, r.stderr


def _tree(root: Path) -> list[tuple[str, bytes]]:
    return sorted(
        (str(p.relative_to(root)), p.read_bytes() if p.is_file() else b"")
        for top in ("lib", "releases", "RELEASES.toml", "start.toml")
        for p in [root / top, *(root / top).rglob("*")]
        if p.exists()
    )


@pytest.mark.slow
def test_the_same_version_as_relhandlers_is_no_conflict(tmp_path: Path) -> None:
    mine = importlib.metadata.version("packaging")
    dist = tmp_path / "wheels"
    _wheel(dist, "packaging", mine)
    proj = _project(tmp_path, f"packaging=={mine}")
    code, stdout, stderr = _build(proj, dist, tmp_path / "out")
    assert code == 0, stderr
    assert json.loads(stdout)["deps"].startswith("deps-")


def test_another_packaging_is_refused_at_build_and_built_elsewhere_at_unpack_and_deploy(
    tmp_path: Path, nodes: list[NodeProc]
) -> None:
    mine = importlib.metadata.version("packaging")
    old = "23.2" if mine != "23.2" else "23.1"
    dist = tmp_path / "wheels"
    _wheel(dist, "packaging", old)
    proj = _project(tmp_path, f"packaging=={old}")
    py = proj / "pyproject.toml"
    text = py.read_text()
    out = tmp_path / "out"
    code, _stdout, stderr = _build(proj, dist, out)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"bundles packaging {old}" in lines[0] and f"own packaging {mine}" in lines[0], stderr
    assert f"packaging=={mine}" in lines[0]
    assert not list(out.rglob("*.tar.gz"))

    # 0.1.0 without it runs on a node; 0.2.0 with it is built where relhandler ran on `old`
    py.write_text(text.replace(f'dependencies = ["packaging=={old}"]', "dependencies = []"))
    code, _stdout, stderr = _build(proj, dist, out)
    assert code == 0, stderr
    root = tmp_path / "root"
    cli("deploy", str(out / "proj-0.1.0.tar.gz"), "--root", str(root), check=True)
    nodes.append(start_node(root))
    py.write_text(text.replace('version = "0.1.0"', 'version = "0.2.0"', 1))
    code, _stdout, stderr = _build(proj, dist, out, elsewhere=True)
    assert code == 0, stderr
    tarball = str(out / "proj-0.2.0.tar.gz")

    before = _tree(root)
    r = cli("unpack", tarball, "--root", str(root))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"bundles packaging {old}" in lines[0] and f"own packaging {mine}" in lines[0]
    assert f"packaging=={mine}" in lines[0] and "proj-0.2.0.tar.gz" in lines[0]
    assert _tree(root) == before  # nothing written
    assert nodes[-1].answers_ping()

    fresh = tmp_path / "fresh"
    r = cli("deploy", tarball, "--root", str(fresh))
    assert r.returncode == 2 and f"bundles packaging {old}" in r.stderr, r.stderr
    assert not fresh.exists() or not any(fresh.iterdir())
