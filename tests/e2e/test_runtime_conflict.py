"""A release that bundles its own version of a package relhandler runs on (issue 14, shown 5).

The node imports relhandler's own ``packaging`` before any release code, so a bundled
``packaging`` of another version would be shadowed without a word: the build refuses it,
naming both versions. The same version is no conflict.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.mkroot import cli

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


def _build(proj: Path, dist: Path, out: Path) -> tuple[int, str, str]:
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "relhandler.cli",
            "build",
            "--project",
            str(proj),
            "--out",
            str(out),
            "--find-links",
            str(dist),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    return r.returncode, r.stdout, r.stderr


def test_a_bundled_packaging_of_another_version_is_refused_at_build(tmp_path: Path) -> None:
    mine = importlib.metadata.version("packaging")
    old = "23.2" if mine != "23.2" else "23.1"
    dist = tmp_path / "wheels"
    _wheel(dist, "packaging", old)
    proj = _project(tmp_path, f"packaging=={old}")
    out = tmp_path / "out"
    code, _stdout, stderr = _build(proj, dist, out)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"bundles packaging {old}" in lines[0] and f"own packaging {mine}" in lines[0], stderr
    assert f"packaging=={mine}" in lines[0]
    assert not list(out.rglob("*.tar.gz"))


@pytest.mark.slow
def test_the_same_version_as_relhandlers_is_no_conflict(tmp_path: Path) -> None:
    mine = importlib.metadata.version("packaging")
    dist = tmp_path / "wheels"
    _wheel(dist, "packaging", mine)
    proj = _project(tmp_path, f"packaging=={mine}")
    code, stdout, stderr = _build(proj, dist, tmp_path / "out")
    assert code == 0, stderr
    assert json.loads(stdout)["deps"].startswith("deps-")
