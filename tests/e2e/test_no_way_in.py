"""No way in (issue 12): the daemon and every re-exec never import from the working directory,
and what the node writes is private to its owner."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relhandler.handler import store
from tests.e2e.fxapp import fx_app
from tests.fixtures.mkroot import add_release, record

pytestmark = pytest.mark.e2e

# the console script: unlike `python -m`, it does not put the working directory on sys.path,
# so only the node's own re-execs could pick up the planted package
RELHANDLER = str(Path(sys.executable).parent / "relhandler")


def _plant(cwd: Path, marker: Path) -> None:
    """A hostile ``relhandler`` package in ``cwd``: importing any part of it leaves a mark."""
    evil = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (cwd / "relhandler" / "cli").mkdir(parents=True)
    (cwd / "relhandler" / "__init__.py").write_text(evil)
    (cwd / "relhandler" / "cli" / "__init__.py").write_text(evil)
    (cwd / "relhandler" / "cli" / "__main__.py").write_text(evil + "raise SystemExit(7)\n")


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELHANDLER, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def two_releases(tmp_path: Path) -> Iterator[Path]:
    """A root where 2.0.0 is permanent and 1.0.0 old (so reboot-old re-executes the node)."""
    root = tmp_path / "root"
    r1 = add_release(root, "fx", "1.0.0", [fx_app("1.0.0", greeting="Hello")])
    r2 = add_release(root, "fx", "2.0.0", [fx_app("2.0.0", greeting="Howdy")])
    store.write_releases(root, store.Releases((record(r2, "permanent"), record(r1, "old"))))
    store.write_start(root, store.StartFile("2.0.0"))
    yield root
    pid_file = root / "run" / "node.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _rpc(cwd: Path, root: Path, target: str, *args: object) -> object:
    r = _run(cwd, "rpc", target, json.dumps(list(args)), "--root", str(root), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_planted_package_never_runs_in_daemon_or_reexec(two_releases: Path, tmp_path: Path) -> None:
    root = two_releases
    cwd = tmp_path / "world-writable"
    cwd.mkdir()
    cwd.chmod(0o777)
    marker = tmp_path / "pwned.txt"
    _plant(cwd, marker)

    r = _run(cwd, "start", "--daemon", "--root", str(root), "--json")
    assert r.returncode == 0, r.stderr
    pid = json.loads(r.stdout)["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1] == b"-I", cmdline  # isolated mode
    assert Path(f"/proc/{pid}/cwd").resolve() == root.resolve()
    assert _rpc(cwd, root, "fx_app.api:greet", "Ada") == "Howdy, Ada!"
    assert _rpc(cwd, root, "os:getcwd") == str(root.resolve())

    # reboot-old re-executes the node in place (same pid): still isolated, still in the root
    r = _run(cwd, "reboot-old", "1.0.0", "--root", str(root))
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    greeting = None
    while time.monotonic() < deadline:
        g = _run(cwd, "rpc", "fx_app.api:greet", '["Bob"]', "--root", str(root), "--json")
        if g.returncode == 0:
            greeting = json.loads(g.stdout)
            if greeting == "Hello, Bob!":
                break
        time.sleep(0.1)
    assert greeting == "Hello, Bob!"
    assert _alive(pid)
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1] == b"-I"
    assert not marker.exists(), marker.read_text()
    assert _run(cwd, "stop", "--root", str(root)).returncode == 0


def test_daemon_starts_from_a_relhandler_checkout(two_releases: Path, tmp_path: Path) -> None:
    """The innocent form: an operator standing in a source checkout of (another) relhandler."""
    root = two_releases
    checkout = tmp_path / "checkout"
    (checkout / "relhandler" / "cli").mkdir(parents=True)
    # an older checkout that cannot even be imported here
    (checkout / "relhandler" / "__init__.py").write_text("raise ImportError('old checkout')\n")
    (checkout / "relhandler" / "cli" / "__main__.py").write_text("raise SystemExit(9)\n")
    (checkout / "pyproject.toml").write_text('[project]\nname = "relhandler"\n')
    r = _run(checkout, "start", "--daemon", "--root", str(root), "--json")
    assert r.returncode == 0, r.stderr
    assert _run(checkout, "ping", "--root", str(root)).returncode == 0
    assert _run(checkout, "stop", "--root", str(root)).returncode == 0


def test_node_log_and_run_files_are_private(two_releases: Path, tmp_path: Path) -> None:
    root = two_releases
    old = os.umask(0o022)  # a permissive operator umask
    try:
        r = _run(tmp_path, "start", "--daemon", "--root", str(root))
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    try:
        for p, want in [
            (root / "log", 0o700),
            (root / "log" / "node.log", 0o600),
            (root / "run", 0o700),
            (root / "run" / "cookie", 0o600),
            (root / "run" / "node.pid", 0o600),
            (root / "run" / "node.lock", 0o600),
            (root / "run" / "node.sock", 0o600),
        ]:
            assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))
    finally:
        assert _run(tmp_path, "stop", "--root", str(root)).returncode == 0
