"""asyncio libraries inside a release, on a real node (issue 14, items 3 and 6).

A GenServer owns a real websockets client connection to a server this test runs; it is
upgraded live and the connection stays up; killing it closes the connection and cancels
its tasks. A slow backend answered through ``spawn_reply`` delays no other caller, and an
upgrade installed while it runs succeeds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.client import Client
from tests.e2e.asyncproj import build
from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def wsc_builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("wsc"))


def j(*args: str) -> Any:
    r = cli(*args, "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rpc(root: Path, target: str, *args: Any) -> Any:
    mod, fun = target.split(":")
    with Client(root) as c:
        return c.call("rpc", {"module": mod, "function": fun, "args": list(args)})


def deployed(tmp_path: Path, builds: Path, nodes: list[NodeProc]) -> Path:
    root = tmp_path / "root"
    j("deploy", str(builds / "wsc-1.0.0.tar.gz"), "--root", str(root))
    nodes.append(start_node(root))
    return root


class WsServer:
    """A websockets server in a thread of its own: echoes "echo:<text>", pushes
    "push <n>" every 20 ms, and records each connection's opening and closing."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        n = 0

        async def handler(ws: Any) -> None:
            nonlocal n
            n += 1
            me = n
            self.events.append(f"open {me}")

            async def pusher() -> None:
                k = 0
                while True:
                    await asyncio.sleep(0.02)
                    k += 1
                    await ws.send(f"push {k}")

            p = asyncio.create_task(pusher())
            try:
                async for msg in ws:
                    await ws.send(f"echo:{msg}")
            except Exception as e:  # the client vanished without a close frame
                self.events.append(f"error {me} {type(e).__name__}")
            finally:
                p.cancel()
                self.events.append(f"closed {me}")

        self._stop = self._loop.create_future()
        async with serve(handler, "127.0.0.1", 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop

    def __enter__(self) -> WsServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)


@pytest.fixture
def ws_server() -> Iterator[WsServer]:
    with WsServer() as s:
        yield s


def until(pred: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def test_a_websockets_client_in_a_genserver_survives_an_upgrade_and_dies_with_it(
    tmp_path: Path, wsc_builds: Path, nodes: list[NodeProc], ws_server: WsServer
) -> None:
    root = deployed(tmp_path, wsc_builds, nodes)
    pid = rpc(root, "wsc.api:start_client", f"ws://127.0.0.1:{ws_server.port}")
    assert rpc(root, "wsc.api:ask", "a") == "v1 got echo:a"
    until(lambda: rpc(root, "wsc.api:client_state")["pushed"] >= 3)

    up = j("upgrade", str(wsc_builds / "wsc-2.0.0.tar.gz"), "--root", str(root))
    assert up["install"]["mode"] == "up"
    # the same process, the same connection (the server saw one), the new code
    assert ws_server.events == ["open 1"]
    assert rpc(root, "wsc.api:client_pid") == pid
    assert rpc(root, "wsc.api:ask", "b") == "v2 got echo:b"
    st = rpc(root, "wsc.api:client_state")
    assert st["upgraded"] is True
    pushed = st["pushed"]
    until(lambda: rpc(root, "wsc.api:client_state")["pushed"] > pushed)  # still flowing
    assert ws_server.events == ["open 1"]

    # killed (no terminate: "kill" cannot be trapped): the runtime closes the connection
    # the process opened and cancels its tasks (its pump, websockets' keepalive)
    assert rpc(root, "wsc.api:watch_client_tasks") >= 2
    assert rpc(root, "wsc.api:kill_client") == "killed"
    until(lambda: "closed 1" in ws_server.events)
    assert all(rpc(root, "wsc.api:watched_tasks_done"))
    assert ws_server.events[0] == "open 1" and ws_server.events[-1] == "closed 1"


def test_a_slow_backend_delays_no_caller_and_an_upgrade_during_it_succeeds(
    tmp_path: Path, wsc_builds: Path, nodes: list[NodeProc]
) -> None:
    root = deployed(tmp_path, wsc_builds, nodes)
    j("unpack", str(wsc_builds / "wsc-2.0.0.tar.gz"), "--root", str(root))
    assert rpc(root, "wsc.api:slow_error") == "KeyError 'bad'"
    slow: list[Any] = []

    def slow_caller() -> None:
        t = time.monotonic()
        slow.append(rpc(root, "wsc.api:slow", "k", 3.0))
        slow.append(time.monotonic() - t)

    th = threading.Thread(target=slow_caller)
    th.start()
    time.sleep(0.3)  # the slow call is under way
    worst = 0.0
    for _ in range(10):
        t = time.monotonic()
        assert rpc(root, "wsc.api:fast")[0] == "v1"
        worst = max(worst, time.monotonic() - t)
    assert not slow  # still waiting on its backend
    # over the node's control socket from this process (a CLI process takes seconds to
    # start on a loaded machine, which would blur what is measured here)
    with Client(root) as c:
        inst = c.call("install", {"version": "2.0.0"}, timeout=60)
    assert inst["mode"] == "up", inst
    assert not slow  # the install did not wait for the slow call
    assert rpc(root, "wsc.api:fast")[0] == "v2"
    th.join(30)
    assert slow[0] == "value of k" and 3.0 <= slow[1] < 10
    # each fast call is a CLI round trip (a fresh client, an rpc process): well under the
    # 3 s an awaiting handle_call would have made it wait
    assert worst < 1.0, worst
