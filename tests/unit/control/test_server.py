"""The control server and client over a real Unix socket, in one process (issue 4, item 3–4).

The server runs on the test's event loop; the blocking client runs in a worker thread, as the
CLI would in its own process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.client import Client, connect
from relhandler.control.protocol import auth_response, encode, read_frame
from relhandler.control.server import ControlServer, Op, Progress, ensure_cookie
from relhandler.errors import (
    AuthError,
    ConfigError,
    NotPurgedError,
    ProtocolError,
    RelhandlerError,
    UnreachableError,
)


@pytest.fixture
def root() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes: pytest's tmp_path can be longer than that
    d = Path(tempfile.mkdtemp(prefix="rhc"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class State:
    """What the ops change, so a test can check that bad clients changed nothing."""

    def __init__(self) -> None:
        self.n = 0
        self.gate = asyncio.Event()
        self.blocked = asyncio.Event()


def make_ops(state: State) -> dict[str, Op]:
    async def ping(args: dict[str, Any], progress: Progress) -> Any:
        return "pong"

    async def incr(args: dict[str, Any], progress: Progress) -> Any:
        state.n += 1
        return state.n

    async def steps(args: dict[str, Any], progress: Progress) -> Any:
        for i in range(int(args["count"])):
            await progress({"step": i, "message": f"step {i}"})
        return "done"

    async def block(args: dict[str, Any], progress: Progress) -> Any:
        state.blocked.set()
        await state.gate.wait()
        return "released"

    async def fail(args: dict[str, Any], progress: Progress) -> Any:
        raise NotPurgedError("module 'm' still has an old version", details={"module": "m"})

    async def crash(args: dict[str, Any], progress: Progress) -> Any:
        raise ZeroDivisionError("boom")

    async def huge(args: dict[str, Any], progress: Progress) -> Any:
        return "x" * (2 << 20)

    return {
        "ping": ping,
        "incr": incr,
        "steps": steps,
        "block": block,
        "fail": fail,
        "crash": crash,
        "huge": huge,
    }


class Harness:
    def __init__(self, root: Path, server: ControlServer, state: State) -> None:
        self.root = root
        self.server = server
        self.state = state

    async def call(self, op: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
        def run() -> Any:
            with connect(self.root, timeout=10) as c:
                return c.call(op, args, **kw)

        return await asyncio.to_thread(run)

    async def raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        r, w = await asyncio.open_unix_connection(str(self.server.path))
        hello = await read_frame(r)
        return r, w, str(hello["challenge"])

    async def authed(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w, challenge = await self.raw()
        w.write(encode({"auth": auth_response(self.server.cookie, challenge)}))
        assert await read_frame(r) == {"ok": "authenticated"}
        return r, w


async def _serve(root: Path, **kw: Any) -> AsyncIterator[Harness]:
    state = State()
    server = ControlServer(root, ensure_cookie(root), make_ops(state), **kw)
    await server.start()
    try:
        yield Harness(root, server, state)
    finally:
        state.gate.set()
        await server.close()


@pytest.fixture
async def h(root: Path) -> AsyncIterator[Harness]:
    async for x in _serve(root, auth_timeout=60):
        yield x


async def closed_by_server(r: asyncio.StreamReader) -> bool:
    """Read until EOF (the server hung up); False if it keeps the connection open."""
    try:
        await asyncio.wait_for(r.read(), 10)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return r.at_eof()


# -- files on disk ---------------------------------------------------------------------


def test_first_start_creates_private_run_dir_and_cookie(root: Path) -> None:
    cookie = ensure_cookie(root)
    assert len(cookie) == 64 and int(cookie, 16) >= 0
    assert stat.S_IMODE((root / "run").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "run" / "cookie").stat().st_mode) == 0o600
    assert ensure_cookie(root) == cookie  # kept across starts


@pytest.mark.parametrize(
    ("target", "mode", "fix"),
    [
        pytest.param("run", 0o755, "chmod 700", id="run-dir-world-readable"),
        pytest.param("run", 0o770, "chmod 700", id="run-dir-group-writable"),
        pytest.param("run/cookie", 0o644, "chmod 600", id="cookie-world-readable"),
        pytest.param("run/cookie", 0o640, "chmod 600", id="cookie-group-readable"),
    ],
)
def test_loose_permissions_refused_and_nothing_changed(
    root: Path, target: str, mode: int, fix: str
) -> None:
    cookie = ensure_cookie(root)
    os.chmod(root / target, mode)
    with pytest.raises(ConfigError) as ei:
        ensure_cookie(root)
    assert ei.value.code == "insecure_permissions"
    assert ei.value.exit_code == 2
    assert f"`{fix} {root / target}`" in ei.value.message
    assert stat.S_IMODE((root / target).stat().st_mode) == mode
    assert (root / "run" / "cookie").read_bytes() == cookie


async def test_socket_is_0600_replaces_a_stale_file_and_is_removed_on_close(root: Path) -> None:
    ensure_cookie(root)
    (root / "run" / "node.sock").write_text("left by a killed node")
    async for h in _serve(root):
        assert stat.S_ISSOCK(h.server.path.stat().st_mode)
        assert stat.S_IMODE(h.server.path.stat().st_mode) == 0o600
        assert await h.call("ping") == "pong"
    assert not (root / "run" / "node.sock").exists()


@pytest.mark.parametrize("bad", ["", "1.5x", "-1", "0"])
def test_bad_auth_timeout_env_is_a_config_error(
    root: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("RELHANDLER_AUTH_TIMEOUT", bad)
    with pytest.raises(ConfigError, match="RELHANDLER_AUTH_TIMEOUT"):
        ControlServer(root, b"c", {})


# -- requests --------------------------------------------------------------------------


async def test_requests_replies_and_ids(h: Harness) -> None:
    assert await h.call("ping") == "pong"
    r, w = await h.authed()
    w.write(encode({"id": 7, "op": "incr", "args": {}}) + encode({"id": 8, "op": "incr"}))
    assert await read_frame(r) == {"id": 7, "ok": 1}
    assert await read_frame(r) == {"id": 8, "ok": 2}
    w.close()


async def test_progress_events_arrive_in_order_before_the_reply(h: Harness) -> None:
    seen: list[dict[str, Any]] = []
    assert await h.call("steps", {"count": 3}, on_event=seen.append) == "done"
    assert seen == [{"step": i, "message": f"step {i}"} for i in range(3)]
    r, w = await h.authed()
    w.write(encode({"id": 1, "op": "steps", "args": {"count": 1}}))
    assert await read_frame(r) == {"id": 1, "event": {"step": 0, "message": "step 0"}}
    assert await read_frame(r) == {"id": 1, "ok": "done"}
    w.close()


async def test_typed_errors_cross_the_socket(h: Harness) -> None:
    with pytest.raises(NotPurgedError) as ei:
        await h.call("fail")
    assert ei.value.code == "not_purged"
    assert ei.value.details == {"module": "m"}


@pytest.mark.parametrize(
    ("req", "code", "message"),
    [
        pytest.param({"id": 1, "op": "nope"}, "unknown_op", "unknown op 'nope'", id="unknown"),
        pytest.param({"id": 1}, "unknown_op", "unknown op None", id="no-op"),
        pytest.param(
            {"id": 1, "op": "ping", "args": [1]}, "protocol", "'args' must be", id="args-list"
        ),
        pytest.param({"id": 1, "op": "crash"}, "internal", "ZeroDivisionError: boom", id="crash"),
        pytest.param({"id": 1, "op": "huge"}, "reply_too_large", "huge: frame of", id="huge"),
    ],
)
async def test_bad_requests_get_an_error_and_the_session_goes_on(
    h: Harness, req: dict[str, Any], code: str, message: str
) -> None:
    r, w = await h.authed()
    w.write(encode(req))
    reply = await read_frame(r)
    assert reply["id"] == 1 and reply["error"]["code"] == code
    assert message in reply["error"]["message"]
    w.write(encode({"id": 2, "op": "incr"}))
    assert await read_frame(r) == {"id": 2, "ok": 1}
    w.close()


async def test_each_request_is_logged_with_uid_op_and_duration(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="relhandler.control"):
        await h.call("ping")
        with pytest.raises(NotPurgedError):
            await h.call("fail")
    lines = [m for m in caplog.messages if m.startswith("control: uid=")]
    assert lines[0].startswith(f"control: uid={os.getuid()} op=ping ok in ")
    assert lines[1].startswith(f"control: uid={os.getuid()} op=fail error not_purged in ")
    assert all(m.endswith(" ms") for m in lines)


# -- authentication and hostile clients ------------------------------------------------


async def test_wrong_cookie_is_refused_with_exit_code_3(h: Harness) -> None:
    (h.root / "run" / "cookie").write_text("0" * 64)  # the client reads this one
    with pytest.raises(AuthError) as ei:
        await h.call("incr")
    assert ei.value.exit_code == 3
    assert "refused the cookie" in ei.value.message
    assert h.state.n == 0


async def test_unreadable_cookie_is_an_auth_error(h: Harness) -> None:
    (h.root / "run" / "cookie").unlink()
    with pytest.raises(AuthError, match="cannot read the cookie"):
        await h.call("ping")


async def test_no_node_is_unreachable(root: Path) -> None:
    with pytest.raises(UnreachableError, match="no node is running") as ei:
        Client(root).open()
    assert ei.value.exit_code == 3


async def test_dead_socket_file_is_unreachable(root: Path) -> None:
    async for h in _serve(root):
        path = h.server.path
    path.parent.mkdir(exist_ok=True)

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))  # a socket file nobody listens on, as after kill -9
    s.close()
    with pytest.raises(UnreachableError, match="not answering"):
        Client(root).open()


# each takes (challenge, the real cookie) and returns what the attacker sends first
ATTACKS: dict[str, Callable[[str, bytes], bytes]] = {
    "wrong-cookie": lambda ch, ck: encode({"auth": auth_response(b"guess", ch)}),
    "replayed-response": lambda ch, ck: encode({"auth": auth_response(ck, "00" * 32)}),
    "auth-not-a-string": lambda ch, ck: encode({"auth": 12345}),
    "no-auth-field": lambda ch, ck: encode({"id": 1, "op": "incr"}),
    "garbage": lambda ch, ck: b"\x00\x00\x00\x05hello",
    "not-an-object": lambda ch, ck: struct.pack(">I", 6) + b"[1, 2]",
    "oversized": lambda ch, ck: struct.pack(">I", (1 << 20) + 1) + b"x" * 100,
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_hostile_first_frame_closes_only_that_connection(h: Harness, attack: str) -> None:
    assert await h.call("incr") == 1
    other_r, other_w = await h.authed()  # a good session open during the attack
    r, w, challenge = await h.raw()
    w.write(ATTACKS[attack](challenge, h.server.cookie))
    assert await closed_by_server(r)
    other_w.write(encode({"id": 1, "op": "incr"}))
    assert await read_frame(other_r) == {"id": 1, "ok": 2}
    assert await h.call("ping") == "pong"
    assert h.state.n == 2  # the attack changed nothing
    other_w.close()


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(lambda: encode({"id": 1, "op": "incr"})[:9], id="cut-in-half"),
        pytest.param(lambda: b"\xff\xff\xff\xff", id="oversized"),
        pytest.param(lambda: b"\x00\x00\x00\x03abc", id="garbage"),
    ],
)
async def test_bad_frame_after_auth_closes_the_connection_and_changes_nothing(
    h: Harness, tail: Callable[[], bytes]
) -> None:
    r, w = await h.authed()
    w.write(tail())
    w.write_eof()
    assert await closed_by_server(r)
    assert h.state.n == 0
    assert await h.call("incr") == 1


async def test_silent_client_is_dropped_after_the_auth_deadline(root: Path) -> None:
    async for h in _serve(root, auth_timeout=0.3):
        r, _w, _ = await h.raw()
        assert await closed_by_server(r)


async def test_silent_and_blocked_clients_do_not_stall_others(h: Harness) -> None:
    silent_r, silent_w, _ = await h.raw()  # connects, never authenticates
    blocked = asyncio.create_task(h.call("block"))  # an op that does not finish yet
    await h.state.blocked.wait()
    assert sorted(await asyncio.gather(*(h.call("incr") for _ in range(4)))) == [1, 2, 3, 4]
    assert h.state.n == 4
    assert await h.call("ping") == "pong"
    assert not blocked.done()
    assert not silent_r.at_eof()  # still connected: the others were served meanwhile
    h.state.gate.set()
    assert await blocked == "released"
    silent_w.close()


async def test_error_from_the_node_keeps_its_class_and_exit_code(h: Harness) -> None:
    with pytest.raises(RelhandlerError) as ei:
        await h.call("crash")
    assert ei.value.code == "internal" and ei.value.exit_code == 1
    assert not isinstance(ei.value, ProtocolError)


async def test_close_lets_an_in_flight_reply_go_out(root: Path) -> None:
    async for h in _serve(root, auth_timeout=60):
        blocked = asyncio.create_task(h.call("block"))
        await h.state.blocked.wait()
        closing = asyncio.create_task(h.server.close())
        await asyncio.sleep(0)  # close() is now waiting for the request to finish
        assert not closing.done()
        h.state.gate.set()
        assert await blocked == "released"
        await closing
        assert not h.server.path.exists()
        with pytest.raises(UnreachableError):
            await h.call("ping")
