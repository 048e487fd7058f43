"""The node as a separate OS process, driven through the real CLI and control socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relhandler.control.client import Client
from relhandler.handler import store
from tests.e2e.fxapp import COUNTER, fx_app
from tests.fixtures.mkroot import NodeProc, add_release, cli, make_root, start_node

pytestmark = pytest.mark.e2e


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    make_root(r, "fx", "1.0.0", [fx_app(terminate_file=str(tmp_path / "terminated.txt"))])
    return r


@pytest.fixture
def node(root: Path) -> Iterator[NodeProc]:
    n = start_node(root)
    try:
        yield n
    finally:
        n.close()


def cli_rpc(root: Path, target: str, *args: object) -> object:
    """``relhandler rpc`` itself, end to end (a CLI process per call)."""
    r = cli("rpc", target, json.dumps(list(args)), "--root", str(root), "--json", check=True)
    return json.loads(r.stdout)


def rpc(root: Path, target: str, *args: object) -> object:
    """The same request over the control socket, from the test process (a CLI start-up is
    ~0.5 s of CPU, and these tests make 20 of them)."""
    module, _, function = target.partition(":")
    with Client(root) as c:
        return c.call("rpc", {"module": module, "function": function, "args": list(args)})


def test_boot_status_and_orderly_stop(root: Path, node: NodeProc) -> None:
    st = json.loads(cli("status", "--root", str(root), "--json", check=True).stdout)
    assert st["release"] == {"name": "fx", "version": "1.0.0"}
    assert [a["name"] for a in st["applications"]] == ["fx_app"]
    assert st["processes"] >= 2  # supervisor + counter
    assert cli_rpc(root, "fx_app.api:incr") == 1
    r = cli("stop", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert node.proc.wait(30) == 0
    assert (root.parent / "terminated.txt").read_text() == "terminated shutdown n=1\n"
    assert not (root / "run" / "node.sock").exists()
    assert cli("ping", "--root", str(root)).returncode == 3


def test_reload_after_edit_changes_behaviour_same_pid(root: Path, node: NodeProc) -> None:
    pid = rpc(root, "fx_app.api:counter_pid")
    assert rpc(root, "fx_app.api:greet", "Alice") == "Hello, Alice!"
    rpc(root, "fx_app.api:incr")
    (root / "lib/fx_app-1.0.0/fx_app/counter.py").write_text(COUNTER.format(greeting="Howdy"))
    cli("reload", "fx_app.counter", "--root", str(root), check=True)
    assert rpc(root, "fx_app.api:greet", "Alice") == "Howdy, Alice!"
    assert rpc(root, "fx_app.api:counter_pid") == pid
    assert rpc(root, "fx_app.api:get") == {"n": 1}


def test_reload_from_patched_file_then_revert(root: Path, node: NodeProc, tmp_path: Path) -> None:
    pid = rpc(root, "fx_app.api:counter_pid")
    patched = tmp_path / "counter_debug.py"
    patched.write_text(
        COUNTER.format(greeting="Hello").replace(
            '    if req[0] == "greet":\n',
            '    if req[0] == "greet":\n'
            "        import logging; logging.getLogger('debug').warning('DEBUG greet %s', req)\n",
        )
    )
    cli("reload", "fx_app.counter", "--from", str(patched), "--root", str(root), check=True)
    assert rpc(root, "fx_app.api:greet", "Bob") == "Hello, Bob!"
    assert "DEBUG greet ('greet', 'Bob')" in node.log_text()
    w = json.loads(cli("which", "fx_app.counter", "--root", str(root), "--json", check=True).stdout)
    assert w["current_file"] == str(patched)
    cli("reload", "fx_app.counter", "--revert", "--root", str(root), check=True)
    rpc(root, "fx_app.api:greet", "Carol")
    assert "DEBUG greet ('greet', 'Carol')" not in node.log_text()
    assert rpc(root, "fx_app.api:counter_pid") == pid


def _raw(root: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(root / "run" / "node.sock"))
    return s


def _frame(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def _closed(s: socket.socket) -> bool:
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, TimeoutError):
        return True


@pytest.mark.parametrize(
    "attack",
    ["wrong_cookie", "no_auth_garbage", "oversized", "cut_in_half", "not_json_object"],
)
def test_bad_clients_are_refused_and_node_keeps_state(
    root: Path, node: NodeProc, attack: str
) -> None:
    rpc(root, "fx_app.api:incr")
    s = _raw(root)
    s.recv(4096)  # the challenge
    if attack == "wrong_cookie":
        s.sendall(_frame({"auth": "00" * 32}))
    elif attack == "no_auth_garbage":
        s.sendall(b"\x00\x00\x00\x05hello")
    elif attack == "oversized":
        s.sendall(struct.pack(">I", (1 << 20) + 1) + b"x" * 100)
    elif attack == "cut_in_half":
        s.sendall(_frame({"auth": "ab" * 32})[:10])
        s.shutdown(socket.SHUT_WR)
    elif attack == "not_json_object":
        s.sendall(_frame([1, 2, 3]))
    assert _closed(s)
    s.close()
    assert rpc(root, "fx_app.api:get") == {"n": 1}


def test_world_readable_cookie_or_run_dir_refused_at_start(root: Path, node: NodeProc) -> None:
    cli("stop", "--root", str(root), check=True)
    node.proc.wait(30)
    cookie = root / "run" / "cookie"
    os.chmod(cookie, 0o644)
    r = cli("start", "--root", str(root))
    assert r.returncode == 2
    assert "chmod 600" in r.stderr
    os.chmod(cookie, 0o600)
    os.chmod(root / "run", 0o755)
    r = cli("start", "--root", str(root))
    assert r.returncode == 2
    assert "chmod 700" in r.stderr


def test_slow_and_parallel_clients_do_not_stall_the_node(root: Path) -> None:
    # a long auth deadline, so the silent client is still connected when we look at the end
    node = start_node(root, env={"RELHANDLER_AUTH_TIMEOUT": "600"})
    try:
        silent = _raw(root)  # connects, sends nothing
        silent.recv(4096)  # the challenge
        results: list[int] = []

        def client() -> None:
            for _ in range(3):
                r = cli("rpc", "fx_app.api:incr", "[]", "--root", str(root))
                results.append(r.returncode)

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        assert cli("ping", "--root", str(root)).returncode == 0
        for t in threads:
            t.join()
        assert results == [0] * 6
        assert rpc(root, "fx_app.api:get") == {"n": 6}
        # every call above was served while the silent client held its connection open
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):
            silent.recv(1)
        silent.close()
    finally:
        node.close()


def test_kill9_then_start_again_and_second_start_refused(root: Path, node: NodeProc) -> None:
    r = cli("start", "--root", str(root))
    assert r.returncode == 1
    assert "already running" in r.stderr
    node.kill9()
    assert (root / "run" / "node.sock").exists()  # left behind by the killed node
    again = start_node(root)
    try:
        assert rpc(root, "fx_app.api:get") == {"n": 0}
    finally:
        again.close()


def test_wrong_cookie_client_gets_exit_3(root: Path, node: NodeProc) -> None:
    (root / "run" / "cookie").write_text("not-the-cookie")
    r = cli("ping", "--root", str(root))
    assert r.returncode == 3
    assert "refused the cookie" in r.stderr


def test_two_starts_at_once_only_one_node_runs(root: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "relhandler.cli", "start", "--root", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        # the loser exits on its own; the winner keeps running
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        losers = [p for p in procs if p.poll() is not None]
        assert len(losers) == 1
        _, err = losers[0].communicate()
        assert losers[0].returncode == 1
        assert "already running" in err, err
        winner = next(p for p in procs if p is not losers[0])
        NodeProc(root, winner, root / "none.log").wait_ready()
        assert rpc(root, "fx_app.api:incr") == 1
        assert cli("stop", "--root", str(root)).returncode == 0
        assert winner.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_daemon_detaches_writes_pid_and_log_and_stops(root: Path, tmp_path: Path) -> None:
    r = cli("start", "--root", str(root), "--daemon", "--json")
    assert r.returncode == 0, r.stderr
    pid = json.loads(r.stdout)["pid"]
    try:
        assert (root / "run" / "node.pid").read_text() == str(pid)
        assert os.getsid(pid) == pid  # its own session: no controlling terminal
        st = json.loads(cli("status", "--root", str(root), "--json", check=True).stdout)
        assert st["pid"] == pid
        again = cli("start", "--root", str(root), "--daemon")
        assert again.returncode == 1 and "already running" in again.stderr
        assert cli("stop", "--root", str(root)).returncode == 0
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
        assert not (root / "run" / "node.pid").exists()
        log = (root / "log" / "node.log").read_text()
        assert "node up: release fx 1.0.0" in log
        assert "control: uid=" in log and "op=status ok" in log
        assert (tmp_path / "terminated.txt").read_text() == "terminated shutdown n=0\n"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped by init) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_sigterm_stops_in_order_with_exit_0(root: Path, node: NodeProc, tmp_path: Path) -> None:
    rpc(root, "fx_app.api:incr")
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(30) == 0
    assert (tmp_path / "terminated.txt").read_text() == "terminated shutdown n=1\n"
    assert not (root / "run" / "node.sock").exists()
    assert not (root / "run" / "node.pid").exists()


def test_next_boot_wins_once_then_the_permanent_release(root: Path) -> None:
    add_release(root, "fx", "2.0.0", [fx_app("2.0.0", greeting="Howdy")])
    store.write_start(root, store.StartFile("1.0.0", next_boot="2.0.0"))
    node = start_node(root)
    try:
        assert rpc(root, "fx_app.api:greet", "A") == "Howdy, A!"
        st = json.loads(cli("status", "--root", str(root), "--json", check=True).stdout)
        assert st["release"]["version"] == "2.0.0"
        assert st["applications"][0]["version"] == "2.0.0"
        # consumed by the boot: a crash now falls back to the permanent release
        assert store.read_start(root) == store.StartFile("1.0.0")
        node.kill9()
        node = start_node(root)
        assert rpc(root, "fx_app.api:greet", "A") == "Hello, A!"
    finally:
        node.close()


def test_permanent_application_exit_stops_the_node(root: Path, node: NodeProc) -> None:
    rpc(root, "fx_app.api:kill_top_supervisor")
    assert node.proc.wait(30) == 1
    assert "permanent application fx_app exited" in node.log_text()
    assert not (root / "run" / "node.sock").exists()


BROKEN_START = """
async def start():
    raise OSError("port 80 in use")
"""


@pytest.mark.parametrize(
    ("breakage", "exit_code", "message"),
    [
        pytest.param("no_start_file", 2, "start.toml: not found; is ", id="no-start-file"),
        pytest.param("unknown_release", 2, "releases on this root: 1.0.0", id="unknown-release"),
        pytest.param(
            "start_raises",
            1,
            "failed to start: fx_app.app:start raised OSError: port 80",
            id="start-raises",
        ),
    ],
)
def test_boot_failure_is_one_typed_line_and_leaves_nothing_behind(
    root: Path, breakage: str, exit_code: int, message: str
) -> None:
    args = ["start", "--root", str(root)]
    if breakage == "no_start_file":
        store.start_path(root).unlink()
    elif breakage == "unknown_release":
        args += ["--release", "9.9.9"]
    else:
        (root / "lib/fx_app-1.0.0/fx_app/app.py").write_text(BROKEN_START)
    r = cli(*args)
    assert r.returncode == exit_code, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (root / "run" / "node.sock").exists()
    assert not (root / "run" / "node.pid").exists()


@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
def test_a_root_too_long_for_the_control_socket_is_refused_before_anything(
    tmp_path: Path, daemon: bool
) -> None:
    # a path whose run/node.sock is 108 bytes: one over what sockaddr_un holds
    base = tmp_path / "r"
    long_root = Path(str(base) + "x" * (108 - len(f"{base}/run/node.sock")))
    assert len(os.fsencode(long_root / "run" / "node.sock")) == 108
    make_root(long_root, "fx", "1.0.0", [fx_app()])
    before = sorted(p.relative_to(long_root).as_posix() for p in long_root.rglob("*"))
    r = cli("start", "--root", str(long_root), *(["--daemon"] if daemon else []))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "108 bytes, over the 107" in lines[0] and "use a shorter root path" in lines[0]
    assert sorted(p.relative_to(long_root).as_posix() for p in long_root.rglob("*")) == before
