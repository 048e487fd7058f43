"""What an ASGI user who knows uvicorn checks first, against a real node (tests/web/probeproj.py).

One node serves the raw ASGI probe for the whole module (HTTP and TLS listeners); the
requests are raw bytes on real sockets, the websockets come from the ``websockets`` client.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from relhandler.control.client import Client
from tests.fixtures.mkroot import NodeProc, cli, start_node
from tests.web.probeproj import build

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def probe_builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("probe"))


class Probe:
    def __init__(self, root: Path, node: NodeProc, log: Path, cafile: Path) -> None:
        self.root, self.node, self.log = root, node, log
        self.http, self.tls, self.room = self.rpc("probe.app:ports")
        self.cafile = str(cafile)

    def rpc(self, target: str, *args: Any) -> Any:
        mod, fun = target.split(":")
        with Client(self.root) as c:
            return c.call("rpc", {"module": mod, "function": fun, "args": list(args)})

    def events(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []


def _boot(builds: Path, work: Path) -> Probe:
    root = work / "root"
    cli("deploy", str(builds / "probe-1.0.0.tar.gz"), "--root", str(root), check=True)
    log = work / "lifespan.log"
    node = start_node(root, env={"PROBE_LOG": str(log)})
    return Probe(root, node, log, builds.parent / "cert.pem")


@pytest.fixture(scope="module")
def probe(probe_builds: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    p = _boot(probe_builds, tmp_path_factory.mktemp("probe-node"))
    yield p
    p.node.close()


async def _exchange(port: int, data: bytes, *, idle: float = 0.3) -> bytes:
    """Send ``data``; everything the server writes until it closes (b"<open>" appended if it
    is still open after ``idle`` s of silence)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    out = b""
    try:
        while chunk := await asyncio.wait_for(r.read(65536), idle):
            out += chunk
    except TimeoutError:
        out += b"<open>"
    finally:
        w.close()
    return out


HTTP_CASES = [
    # (what, request bytes, fragments the answer must contain in order, closed by server)
    (
        "keep-alive and pipelining: answers in order, connection kept",
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2"
        b"\r\n\r\nhiGET /b HTTP/1.1\r\nHost: t\r\n\r\n",
        [b"HTTP/1.1 200", b"v1", b"HTTP/1.1 200", b"hi", b"HTTP/1.1 200", b"v1<open>"],
    ),
    (
        "HTTP/1.0: answered, then closed",
        b"GET / HTTP/1.0\r\n\r\n",
        [b"HTTP/1.1 200", b"connection: close", b"v1"],
    ),
    (
        "Connection: close is honoured",
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        [b"HTTP/1.1 200", b"connection: close", b"v1"],
    ),
    (
        "Content-Length and Transfer-Encoding: the chunked body counts, then closed (RFC 9112)",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        [b"HTTP/1.1 200", b"connection: close", b"hi"],
    ),
    (
        "chunked request body",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        [b"HTTP/1.1 200", b"content-length: 11", b"hello world<open>"],
    ),
    (
        "HEAD: the head without the body, the connection goes on",
        b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\n",
        [b"HTTP/1.1 200", b"content-length: 2\r\n", b"\r\n\r\nHTTP/1.1 200", b"v1<open>"],
    ),
    (
        "streamed response: chunked, in order",
        b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n",
        [b"transfer-encoding: chunked", b"0;", b"1;", b"2;", b"v1", b"0\r\n\r\n<open>"],
    ),
]


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
async def test_http_like_uvicorn(probe: Probe, case: tuple[str, bytes, list[bytes]]) -> None:
    _what, data, want = case
    got = (await _exchange(probe.http, data)).replace(b"Connection: close", b"connection: close")
    got = got.replace(b"Transfer-Encoding", b"transfer-encoding")
    at = 0
    for frag in want:
        i = got.find(frag, at)
        assert i >= 0, f"{frag!r} not after offset {at} in {got!r}"
        at = i + len(frag)
    # "<open>": the server kept the connection; otherwise it closed it after the answer
    assert got.endswith(b"<open>") == want[-1].endswith(b"<open>"), got


async def test_expect_100_continue_only_when_the_app_reads(probe: Probe) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", probe.http)
    w.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 100 ")
    w.write(b"hello")
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and await r.readexactly(5) == b"hello"
    w.close()


async def test_idle_keep_alive_connection_closed_after_5_s(probe: Probe) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", probe.http)
    w.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(r.readuntil(b"v1"), 5)
    t0 = time.monotonic()
    assert await asyncio.wait_for(r.read(), 15) == b""
    assert 4.5 < time.monotonic() - t0 < 7.0
    w.close()


async def test_asgi_scope(probe: Probe) -> None:
    body = await _exchange(
        probe.http, b"GET /x%20y/scope?a=1%202&b HTTP/1.1\r\nHost: t\r\nX-Mixed: A\r\n\r\n"
    )
    scope = json.loads(body.split(b"\r\n\r\n", 1)[1].removesuffix(b"<open>"))
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1" and scope["scheme"] == "http"
    assert scope["method"] == "GET"
    assert scope["root_path"] == "/pre" and scope["path"] == "/pre/x y/scope"
    assert scope["query_string"] == {"bytes": "a=1%202&b"}
    assert [{"bytes": "x-mixed"}, {"bytes": "A"}] in scope["headers"]  # names lowercased
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", probe.http]
    assert scope["state"] == {"opened_by": "v1"}  # from the lifespan's startup


async def test_websocket_subprotocol_ping_fragments_close_codes(probe: Probe) -> None:
    url = f"ws://127.0.0.1:{probe.http}/ws"
    async with websockets.connect(url, subprotocols=["chat.v2", "chat.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v2"
        await asyncio.wait_for(await ws.ping(b"p"), 5)
        await ws.send(["frag", "mented"])  # one message in three frames
        assert await ws.recv() == "v1 fragmented"
        await ws.send(b"\x00\xff")
        assert await ws.recv() == b"\x00\xff"
        await ws.send("scope")
        scope = json.loads(await ws.recv())
        assert scope["type"] == "websocket" and scope["scheme"] == "ws"
        assert scope["subprotocols"] == ["chat.v2", "chat.v1"]
        await ws.send("close 4001")
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert (ws.close_code, ws.close_reason) == (4001, "asked")


async def test_tls_listeners_https_and_wss(probe: Probe) -> None:
    ctx = ssl.create_default_context(cafile=probe.cafile)
    r, w = await asyncio.open_connection("127.0.0.1", probe.tls, ssl=ctx)
    w.write(b"GET /scope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    scope = json.loads((await asyncio.wait_for(r.read(), 10)).split(b"\r\n\r\n", 1)[1])
    w.close()
    assert scope["scheme"] == "https"
    async with websockets.connect(f"wss://127.0.0.1:{probe.tls}/ws", ssl=ctx) as ws:
        await ws.send("scope")
        assert json.loads(await ws.recv())["scheme"] == "wss"
    async with websockets.connect(f"wss://127.0.0.1:{probe.room}/", ssl=ctx) as ws:
        await ws.send("hi")
        assert await ws.recv() == "room 1 hi"  # the websocket behaviour, over TLS
    # plain HTTP to the TLS port: the handshake fails, that connection alone is closed
    assert (await _exchange(probe.tls, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", idle=5)) == b""


async def _until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_send_after_the_client_left_raises_oserror(probe: Probe) -> None:
    """ASGI 2.4 (the spec_version the scope says): send() on a closed connection raises an
    OSError, so a stream that never ends (SSE) stops when its client goes."""
    before = probe.rpc("probe.store:stats")
    r, w = await asyncio.open_connection("127.0.0.1", probe.http)
    w.write(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(r.readuntil(b"tick"), 5)
    ws = await websockets.connect(f"ws://127.0.0.1:{probe.http}/push")
    assert await ws.recv() == "tick"
    w.transport.abort()
    ws.transport.abort()

    def gone() -> bool:
        s = probe.rpc("probe.store:stats")
        return bool(
            s["forever_gone"] > before["forever_gone"] and s["push_gone"] > before["push_gone"]
        )

    await _until(gone)


async def test_websocket_close_and_ping_answered_while_the_app_only_sends(probe: Probe) -> None:
    """The server reads the socket whatever the app does (uvicorn too): a ping is answered
    and a client's close completes the handshake, while the app never calls receive."""
    ws = await websockets.connect(f"ws://127.0.0.1:{probe.http}/push")
    assert await ws.recv() == "tick"
    await asyncio.wait_for(await ws.ping(b"x"), 5)
    t0 = time.monotonic()
    await asyncio.wait_for(ws.close(4000, "bye"), 5)
    assert time.monotonic() - t0 < 2
    assert ws.close_code == 4000


BAD = [
    # (what, bytes, the status the server answers)
    (
        "websocket handshake without a key",
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
        400,
    ),
    (
        "websocket version 8",
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        426,
    ),
    (
        "malformed chunked body",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
        400,
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
async def test_bad_handshakes_and_bodies_get_4xx(
    probe: Probe, case: tuple[str, bytes, int]
) -> None:
    _what, data, status = case
    got = await _exchange(probe.http, data, idle=5)
    assert got.startswith(b"HTTP/1.1 %d " % status), got
    assert not got.endswith(b"<open>"), "the connection should be closed"


async def _get(r: asyncio.StreamReader, w: asyncio.StreamWriter, path: str = "/") -> bytes:
    w.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return await r.readexactly(n)


async def test_install_then_purge_on_a_real_node(probe: Probe, probe_builds: Path) -> None:
    """After an install, the next request on a keep-alive connection runs v2, with the
    lifespan state v1's startup made; a websocket loop of v1 keeps its version; a soft
    purge waits for it; make-permanent's brutal purge (load_module's default) closes it
    with 1012 and leaves the v2 websocket alone. The lifespan is sent nothing. (Last test
    on the module's node: it stops it.)"""
    root = str(probe.root)

    async def run(*args: str) -> int:
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(None, lambda: cli(*args, "--root", root, timeout=60))
        return r.returncode

    r, w = await asyncio.open_connection("127.0.0.1", probe.http)
    assert await _get(r, w) == b"v1"
    old = await websockets.connect(f"ws://127.0.0.1:{probe.http}/ws")
    await old.send("a")
    assert await old.recv() == "v1 a"
    answers: list[bytes] = []
    done = asyncio.Event()

    async def keep_asking() -> None:  # under 5 s apart: the keep-alive connection stays
        while not done.is_set():
            answers.append(await _get(r, w))
            await asyncio.sleep(0.3)

    asking = asyncio.create_task(keep_asking())
    assert await run("unpack", str(probe_builds / "probe-2.0.0.tar.gz")) == 0
    assert await run("install", "2.0.0") == 0
    done.set()
    await asking
    assert answers[0] == b"v1" and set(answers) <= {b"v1", b"v2"}
    assert await _get(r, w) == b"v2"  # the same connection, the next request
    assert json.loads(await _get(r, w, "/scope"))["state"] == {"opened_by": "v1"}
    await old.send("b")
    assert await old.recv() == "v1 b"  # its loop is v1 code until it returns
    new = await websockets.connect(f"ws://127.0.0.1:{probe.http}/ws")
    await new.send("c")
    assert await new.recv() == "v2 c"
    assert await run("purge", "probe.site", "--soft") != 0  # in use: not purged, not closed
    await old.send("d")
    assert await old.recv() == "v1 d"
    assert await run("make-permanent", "2.0.0") == 0
    await asyncio.wait_for(old.wait_closed(), 5)
    assert old.close_code == 1012
    await new.send("e")
    assert await new.recv() == "v2 e"
    assert probe.events() == ["lifespan.startup", "v1"] * 2
    w.close()
    await new.close()
    # the lifespan ran v1's code too: the brutal purge killed it, so a stop sends no
    # shutdown (docs/web.md: keep the lifespan in a module no version changes)
    probe.node.proc.send_signal(signal.SIGTERM)
    assert await asyncio.get_running_loop().run_in_executor(None, probe.node.proc.wait, 30) == 0
    assert "lifespan.shutdown" not in probe.events()


async def test_stop_drains_like_uvicorn_then_lifespan_shutdown(
    probe_builds: Path, tmp_path: Path
) -> None:
    """A stop answers the request under way (with ``connection: close``), closes an idle
    keep-alive connection, tells a websocket 1012, then runs the lifespan's shutdown."""
    p = _boot(probe_builds, tmp_path)
    try:
        ws = await websockets.connect(f"ws://127.0.0.1:{p.http}/ws")
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", p.http)
        idle_w.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.wait_for(idle_r.readuntil(b"v1"), 5)
        r, w = await asyncio.open_connection("127.0.0.1", p.http)
        w.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")  # the app answers after 1 s
        await asyncio.sleep(0.3)
        p.node.proc.send_signal(signal.SIGTERM)
        answer = await asyncio.wait_for(r.read(), 10)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"slow v1"), answer
        assert b"connection: close" in answer.lower()
        assert await asyncio.wait_for(idle_r.read(), 5) == b""
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1012
        assert await asyncio.get_running_loop().run_in_executor(None, p.node.proc.wait, 30) == 0
        assert p.events().count("lifespan.shutdown") == 2  # one per ASGI listener
        w.close()
        idle_w.close()
    finally:
        p.node.close()


BAD_LISTENERS = [
    (
        '{ name = "http", app = "probe.site:app", '
        'certfile = "/nope/c.pem", keyfile = "/nope/k.pem" }',
        "listener 'http': cannot load certfile/keyfile '/nope/c.pem'/'/nope/k.pem'",
    ),
    ('{ name = "http", app = "probe.site:app", prot = 3 }', "unknown keys ['prot']"),
]


def _start(root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relhandler.cli", "start", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr + r.stdout
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
    assert line.startswith("Error: application 'probe' failed to start: "), line
    assert "\\'" not in line, line  # one readable line, not a repr of reprs
    return line


def test_boot_failures_in_one_line(probe_builds: Path, tmp_path: Path) -> None:
    """A lifespan whose startup fails fails the listener, so the application, so the boot
    (exit 1, the app's message). A bad listener table (here in the release's sys.toml) is
    a ConfigError naming the listener and the field: bad input, exit 2 (docs/web.md)."""
    root = tmp_path / "root"
    cli("deploy", str(probe_builds / "probe-1.0.0.tar.gz"), "--root", str(root), check=True)
    r = _start(root, {"PROBE_FAIL_STARTUP": "1"})
    assert r.returncode == 1
    assert "lifespan startup failed: no database" in _error_line(r)
    for table, want in BAD_LISTENERS:
        (root / "releases" / "1.0.0" / "sys.toml").write_text(f"[probe]\nlisteners = [{table}]\n")
        r = _start(root)
        assert r.returncode == 2, r.stderr
        assert want in _error_line(r)
