"""The listening-fd handover (issue 16.2): held duplicates, export, inherit, adopt."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from relhandler.runtime.listenfds import ENV, FdRegistry, ListenKey, tcp_key


def _listener() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, int(s.getsockname()[1])


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


CHILD = """
import os, sys
from relhandler.runtime.listenfds import registry
port = int(sys.argv[1])
assert registry.inherit(os.environ) == 1
assert "RELHANDLER_LISTEN_FDS" not in os.environ
s = registry.adopt_tcp("127.0.0.1", port)
assert s is not None and registry.close_unadopted() == []
s.setblocking(True)
c, _ = s.accept()
c.sendall(c.recv(100).upper())
"""


def test_a_held_listener_keeps_listening_through_an_exec_and_its_backlog_is_served() -> None:
    reg = FdRegistry()
    s, port = _listener()
    key = tcp_key(s.family, "127.0.0.1", port)
    token = reg.hold(s.fileno(), key)
    reg.hand_over()
    reg.release(token)  # the listener closes while the node stops: the duplicate stays
    s.close()
    # connected while nothing accepts: the connection waits in the backlog
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(b"hello")
    env = {k: v for k, v in os.environ.items() if k != ENV}
    assert reg.export(env) == 1
    [[fd, family, host, p]] = json.loads(env[ENV])
    assert (family, host, p) == (socket.AF_INET, "127.0.0.1", port)
    assert os.get_inheritable(fd)
    r = subprocess.run([sys.executable, "-c", CHILD, str(port)], env=env, pass_fds=[fd], timeout=30)
    assert r.returncode == 0
    c.settimeout(10)
    assert c.recv(100) == b"HELLO"
    c.close()
    os.close(fd)


def test_a_normal_close_closes_the_duplicate() -> None:
    reg = FdRegistry()
    s, port = _listener()
    token = reg.hold(s.fileno(), tcp_key(s.family, "127.0.0.1", port))
    s.close()
    assert not _refused(port)  # the duplicate still listens
    reg.release(token)
    reg.release(token)  # idempotent
    assert _refused(port)
    env: dict[str, str] = {ENV: "stale"}
    assert reg.export(env) == 0 and ENV not in env


def test_port_zero_is_not_held() -> None:
    reg = FdRegistry()
    s, _port = _listener()
    with s:
        assert reg.hold(s.fileno(), tcp_key(s.family, "127.0.0.1", 0)) is None


@pytest.mark.parametrize(
    "raw",
    ["not json", json.dumps({"fd": 3}), json.dumps([[99999, 2, "127.0.0.1", 80]]), "[[1,2]]"],
)
def test_bad_or_stale_entries_are_ignored(raw: str) -> None:
    reg = FdRegistry()
    env = {ENV: raw}
    assert reg.inherit(env) == 0
    assert ENV not in env


def test_an_fd_that_is_not_a_listening_socket_is_ignored() -> None:
    reg = FdRegistry()
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        env = {ENV: json.dumps([[r, 2, "127.0.0.1", 1], [a.fileno(), 2, "127.0.0.1", 2]])}
        assert reg.inherit(env) == 0
    finally:
        os.close(r)
        os.close(w)
        a.close()
        b.close()


def test_unadopted_inherited_listeners_are_closed_after_boot() -> None:
    reg = FdRegistry()
    s, port = _listener()
    fd = os.dup(s.fileno())
    s.close()
    assert reg.inherit({ENV: json.dumps([[fd, socket.AF_INET, "127.0.0.1", port]])}) == 1
    assert reg.adopt(ListenKey(socket.AF_INET, "127.0.0.1", port + 1)) is None
    assert reg.close_unadopted() == [ListenKey(socket.AF_INET, "127.0.0.1", port)]
    assert _refused(port)
