"""``relhandler dev`` under a pseudo-terminal (issue 19, What must be shown 1).

A project made by ``relhandler new``; the real CLI runs ``dev`` on a pty (its controlling
terminal, so the Ctrl-C written to it is the terminal's SIGINT to the foreground group);
calls go through the node's real control socket. One session: a GenServer edited on disk
answers from the new code with the same pid; an edit whose state shape changes is migrated
by its code_change; a syntax error is shown with file and line while the old code keeps
answering; Ctrl-C stops the node cleanly.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.client import Client
from relhandler.control.dev import module_of
from tests.fixtures.mkroot import cli

pytestmark = pytest.mark.e2e


class Pty:
    """A command on a new pseudo-terminal: its output read with ``expect``."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.master, slave = os.openpty()

        def controlling_tty() -> None:  # after setsid: the pty becomes the session's terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=controlling_tty,
        )
        os.close(slave)
        self.out = ""
        self.pos = 0

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the terminal's last process is gone
            return False
        self.out += data.decode(errors="replace").replace("\r\n", "\n")
        return bool(data)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait for ``pattern`` in the output not matched yet; move past it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.out, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(min(left, 0.5)) and self.proc.poll() is not None):
                raise AssertionError(f"{pattern!r} not in the output:\n{self.out[self.pos :]}")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        while self._read(0.05):
            pass
        return self.proc.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        os.close(self.master)


# a dev node imports the project's declared dependencies from the environment, nothing else
PROBE = """
import importlib


def imp(name):
    try:
        return importlib.import_module(name).__name__
    except ModuleNotFoundError as e:
        return f"{type(e).__name__}: {e}"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "shop"
    cli("new", "shop", "--dir", str(proj), check=True)
    py = proj / "pyproject.toml"
    py.write_text(py.read_text().replace("dependencies = []", 'dependencies = ["iniconfig"]'))
    (proj / "src" / "shop" / "probe.py").write_text(PROBE)
    return proj


@pytest.fixture
def dev(project: Path) -> Iterator[Pty]:
    argv = [sys.executable, "-m", "relhandler.cli", "dev", "--project", str(project)]
    p = Pty([*argv, "--debounce", "10"], project)
    try:
        yield p
    finally:
        p.close()


def rpc(root: Path, fun: str, *args: Any) -> Any:
    """A call through the node's control socket (the client API `relhandler rpc` uses)."""
    mod, _, name = fun.rpartition(":")
    with Client(root, timeout=30) as c:
        return c.call("rpc", {"module": mod, "function": name, "args": list(args)})


def save(path: Path, text: str) -> None:
    """Save as an editor does: the whole new content at once (write and rename)."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def edit(path: Path, *changes: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    save(path, text)


def test_the_edit_loop(project: Path, dev: Pty) -> None:
    server = project / "src" / "shop" / "server.py"
    root = project / "_build" / "dev"
    dev.expect(r"dev node of shop 0\.1\.0 up \(pid \d+, root _build/dev\); watching src/shop")
    assert rpc(root, "shop.server:hello", "Ada") == "Hello, Ada!"
    pid = rpc(root, "relhandler.runtime:whereis", "shop_server")
    assert rpc(root, "shop.probe:imp", "iniconfig") == "iniconfig"  # declared
    refused = rpc(root, "shop.probe:imp", "sortedcontainers")  # installed here, not declared
    assert refused.startswith("NotShippedError: module 'sortedcontainers' is not shipped")

    # a new greeting: the same process answers from the new code
    edit(server, ('f"{greeting}, {request[1]}!"', 'f"{greeting} again, {request[1]}!"'))
    m = dev.expect(r"reloaded shop\.server (sha256:[0-9a-f]{16}), migrated 1 \((<[\d.]+>)\), ")
    assert m[2] == pid
    assert rpc(root, "shop.server:hello", "Bob") == "Hello again, Bob!"
    assert rpc(root, "relhandler.runtime:whereis", "shop_server") == pid

    # the state changes shape: code_change migrates the running process's state
    edit(
        server,
        (
            '{**state, "count": state["count"] + 1}',
            '{**state, "count": state["count"] + 1, "names": [*state["names"], request[1]]}',
        ),
        ('return ("ok", {"count": 0})', 'return ("ok", {"count": 0, "names": []})'),
        ("    count: int\n", "    count: int\n    names: list[str]\n"),
        (
            'return ("ok", {"count": 0, **state})',
            'return ("ok", {"count": 0, "names": ["?"], **state})',
        ),
    )
    dev.expect(rf"reloaded shop\.server sha256:[0-9a-f]{{16}}, migrated 1 \({re.escape(pid)}\), ")
    assert rpc(root, "shop.server:hello", "Cy") == "Hello again, Cy!"
    state = rpc(root, "relhandler.runtime.sys:get_state", "shop_server")
    assert state == {"count": 3, "names": ["?", "Cy"]}
    assert rpc(root, "relhandler.runtime:whereis", "shop_server") == pid

    # a code_change that raises: refused by the preflight, nothing changed
    good = server.read_text()
    edit(server, ('return ("ok", {"count": 0, "names": ["?"], **state})', 'raise KeyError("n")'))
    dev.expect(
        r"error: reload of shop\.server: preflight: shop\.server\.code_change would fail in 1 "
    )
    assert rpc(root, "relhandler.runtime.sys:get_state", "shop_server") == state
    save(server, good)  # back to what the node runs: nothing to load

    # a syntax error: shown with its file and line; the node keeps the previous version
    lines = server.read_text().splitlines()
    save(server, "\n".join([*lines, "", "def broken(:", ""]))
    dev.expect(
        rf"error: {re.escape(str(server))}:{len(lines) + 2}: syntax error in module 'shop\.server'"
    )
    assert rpc(root, "shop.server:hello", "Di") == "Hello again, Di!"
    assert rpc(root, "relhandler.runtime:whereis", "shop_server") == pid

    # a second dev on the same project is refused, and wipes nothing
    r = cli("dev", "--project", str(project))
    assert r.returncode == 1 and "a node is already running on" in r.stderr, r.stderr
    assert rpc(root, "shop.server:hello", "Ed") == "Hello again, Ed!"

    # Ctrl-C on the terminal: the node stops in order, no traceback, run files gone
    dev.send(b"\x03")
    assert dev.wait() == 0, dev.out
    assert "Traceback" not in dev.out, dev.out
    assert not (root / "run").exists()


@pytest.mark.parametrize(
    ("path", "module"),
    [
        pytest.param("src/shop/server.py", "shop.server", id="module"),
        pytest.param("src/shop/__init__.py", "shop", id="package"),
        pytest.param("src/shop/web/routes.py", "shop.web.routes", id="subpackage"),
        pytest.param("src/shop/notes.txt", None, id="not-python"),
        pytest.param("src/other/x.py", None, id="outside-the-packages"),
        pytest.param("src/shop/my-script.py", None, id="not-an-identifier"),
    ],
)
def test_module_of(tmp_path: Path, path: str, module: str | None) -> None:
    assert module_of([tmp_path / "src" / "shop"], tmp_path / path) == module


def test_a_directory_without_a_project_is_bad_input(tmp_path: Path) -> None:
    r = cli("dev", "--project", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.startswith(f"Error: {tmp_path / 'pyproject.toml'}: not found"), r.stderr
    assert not (tmp_path / "_build").exists()
