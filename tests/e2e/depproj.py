"""A scaffolded project whose releases differ in a bundled dependency (``rh_testdep``, a
hand-made wheel): the fixture for restart-type and hot dependency upgrades (issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.wheels import make_wheel

__all__ = ["DepProject", "rh"]


def rh(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Any:
    """The real CLI in a subprocess (``env`` added to ours)."""
    return subprocess.run(
        [sys.executable, "-m", "relhandler.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


USES_DEP = """
import rh_testdep


def version():
    return rh_testdep.VERSION
"""

# the app's start imports the dependency, so a broken one fails the boot
APP = """
from relhandler.runtime import supervisor

import dep.uses_dep  # noqa: F401


async def start():
    return await supervisor.start_link("dep.sup", None, name="dep_sup")
"""


class DepProject:
    """Project ``dep`` (app version pinned at 0.1.0) built as releases that differ only in
    the ``rh_testdep`` version they bundle; wheels come from a local dir, never an index."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.dist = tmp / "dist"
        self.proj = tmp / "dep"
        self.out = tmp / "rel"
        self.env = {"PIP_FIND_LINKS": str(self.dist), "PIP_NO_INDEX": "1"}
        r = rh("new", "dep", "--dir", str(self.proj))
        assert r.returncode == 0, r.stderr
        (self.proj / "src/dep/uses_dep.py").write_text(USES_DEP)
        (self.proj / "src/dep/app.py").write_text(APP)
        self._pyproject = (self.proj / "pyproject.toml").read_text()

    def wheel(self, version: str, init: str | None = None) -> None:
        make_wheel(
            self.dist,
            "rh_testdep",
            version,
            {"rh_testdep/__init__.py": init or f"VERSION = {version!r}\n"},
        )

    def build(self, vsn: str, dep: str, extra: str = "") -> dict[str, Any]:
        """Release ``vsn`` bundling ``rh_testdep==dep``; returns build's JSON."""
        text = (
            self._pyproject.replace('version = "0.1.0"', f'version = "{vsn}"', 1)
            .replace("dependencies = []", f'dependencies = ["rh_testdep=={dep}"]')
            .replace('path = "src/dep"', 'path = "src/dep"\nversion = "0.1.0"')
            .replace('config = "config/sys.toml"', f'config = "config/sys.toml"\n{extra}')
        )
        (self.proj / "pyproject.toml").write_text(text)
        r = rh("build", "--project", str(self.proj), "--out", str(self.out), "--json", env=self.env)
        assert r.returncode == 0, r.stderr
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    def relup(self, to: str, frm: str) -> None:
        r = rh("relup", "--to", to, "--from", frm, "--rel-dir", str(self.out / "dep"))
        assert r.returncode == 0, r.stderr

    def tarball(self, vsn: str) -> str:
        return str(self.out / f"dep-{vsn}.tar.gz")
