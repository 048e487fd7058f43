"""A real node serves a Starlette app and a websocket behaviour through an upgrade and a
downgrade, under load: 100 websocket clients and keep-alive HTTP clients never reconnect."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import websockets

from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

N_WS = 100
N_ROOM = 10
N_HTTP = 4


def _cli_json(*args: str) -> object:
    r = cli(*args, "--json", check=True, timeout=120)
    return json.loads(r.stdout)


async def _http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    assert head.startswith(b"HTTP/1.1 200"), head
    return (await reader.readexactly(length)).decode()


class HttpLoad:
    """Keep-alive clients sending GET / in a loop; every answer is (sent_at, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, str]] = []
        self.failed: list[str] = []
        self.stop = False

    async def client(self) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError as e:
            self.failed.append(repr(e))
            return
        try:
            while not self.stop:
                sent = time.monotonic()
                try:
                    body = await asyncio.wait_for(_http_get(reader, writer), 10)
                except Exception as e:  # any failure counts, and the client reconnects
                    self.failed.append(repr(e))
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    continue
                self.answers.append((sent, body))
                await asyncio.sleep(0.002)
        finally:
            writer.close()


async def _say(ws: websockets.ClientConnection, text: str) -> str:
    await ws.send(text)
    return str(await asyncio.wait_for(ws.recv(), 15))


async def _round(conns: list[websockets.ClientConnection], tag: str) -> list[str]:
    return list(await asyncio.gather(*(_say(c, tag) for c in conns)))


async def test_starlette_and_behaviour_upgrade_and_downgrade_under_load(
    webt_builds: Path, tmp_path: Path, nodes: list[NodeProc]
) -> None:
    root = tmp_path / "root"
    _cli_json("deploy", str(webt_builds / "webt-1.0.0.tar.gz"), "--root", str(root))
    nodes.append(start_node(root))
    http_port, room_port = json.loads(
        cli("rpc", "webt.app:ports", "[]", "--root", str(root)).stdout
    )
    _cli_json("unpack", str(webt_builds / "webt-2.0.0.tar.gz"), "--root", str(root))

    ws = [await websockets.connect(f"ws://127.0.0.1:{http_port}/ws") for _ in range(N_WS)]
    room = [
        await websockets.connect(f"ws://127.0.0.1:{room_port}/", subprotocols=["chat"])  # type: ignore[list-item]
        for _ in range(N_ROOM)
    ]
    assert {c.subprotocol for c in room} == {"chat"}  # init chose it
    assert await _round(ws, "a") == ["v1 1 a"] * N_WS
    assert await _round(room, "a") == ["v1 n=1"] * N_ROOM
    assert await _round(room, "b") == ["v1 n=2"] * N_ROOM

    load = HttpLoad(http_port)
    clients = [asyncio.create_task(load.client()) for _ in range(N_HTTP)]
    loop = asyncio.get_running_loop()

    async def install(vsn: str) -> tuple[float, float]:
        """(when the install was asked for, when its reply arrived)"""
        asked = time.monotonic()
        await loop.run_in_executor(None, _cli_json, "install", vsn, "--root", str(root))
        return asked, time.monotonic()

    try:
        await asyncio.sleep(0.3)
        up_at = await install("2.0.0")
        await asyncio.sleep(0.3)
        up_ws = await _round(ws, "b")
        up_room = await _round(room, "c")
        down_at = await install("1.0.0")
        await asyncio.sleep(0.3)
    finally:
        load.stop = True
        await asyncio.gather(*clients)

    # every websocket stayed open and kept its per-connection counter; v2 answered after
    # the upgrade (through the qualified call from the unchanged loop)
    assert up_ws == ["v2 2 b"] * N_WS
    assert await _round(ws, "c") == ["v1 3 c"] * N_WS
    # the behaviour's per-connection state was migrated up (n → count) and back down
    assert up_room == ["v2 count=3 since=v1"] * N_ROOM
    assert await _round(room, "d") == ["v1 n=4"] * N_ROOM
    assert all(c.close_code is None for c in ws + room), "a websocket was closed"

    assert load.failed == [], load.failed[:5]
    assert load.answers
    # requests sent between an install's reply and the next install's request: new code only
    windows = ((up_at[1], down_at[0], "v2"), (down_at[1], float("inf"), "v1"))
    for start, end, want in windows:
        window = [(t, b) for t, b in load.answers if start <= t < end]
        assert window, f"no HTTP answers after the install of {want}"
        assert all(b == want for _, b in window), [b for _, b in window if b != want][:5]
        first = min(t for t, _ in window)
        assert first - start < 0.1, f"first {want} answer {first - start:.3f}s after install"
    for c in ws + room:
        await c.close()
