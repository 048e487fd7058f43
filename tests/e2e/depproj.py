"""A scaffolded project whose releases differ in a bundled dependency (``rh_testdep``, a
hand-made wheel): the fixture for restart-type and hot dependency upgrades (issue 16)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.wheels import make_wheel

__all__ = ["DepProject", "free_port", "rh"]


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


# a line server on the app's `port`: each line is answered with the dependency's version
LINES = """
from relhandler.runtime import current_node, receive, send, sockets, spawn, spawn_link

import dep.uses_dep


def start_link():
    port = current_node().apps.get_env("dep", "port")
    return ("ok", spawn_link(_accept, port))


async def _accept(port):
    lst = await sockets.listen("127.0.0.1", port)
    while True:
        pid = spawn(_serve)
        send(pid, await lst.accept(owner=pid))


async def _serve():
    sock = await receive()
    while True:
        m = await receive()
        if m[0] != "tcp":
            return
        sock.send((dep.uses_dep.version() + "\\n").encode())
"""

SUP = """
def init(args):
    flags = {"strategy": "one_for_one", "intensity": 5, "period": 10}
    children = [
        {"id": "server", "start": ("dep.server", "start_link", []), "modules": ["dep.server"]},
        {"id": "lines", "start": ("dep.lines", "start_link", []), "modules": ["dep.lines"]},
    ]
    return ("ok", (flags, children))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        (self.proj / "src/dep/lines.py").write_text(LINES)
        (self.proj / "src/dep/sup.py").write_text(SUP)
        self.port = free_port()
        (self.proj / "config/sys.toml").write_text(f"[dep]\nport = {self.port}\n")
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
