"""relhandler.web on an in-process node: dispatch, purge, errors, lifespan, close codes.

The listener tree is started the way an application's supervisor starts it; modules are
written to a code dir with unique names (sys.modules is interpreter-global)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from relhandler import web
from relhandler.runtime import Node, listenfds
from relhandler.runtime import supervisor as sup
from relhandler.web.config import ListenerConfig

_ids = itertools.count(1)

SITE = """
__vsn__ = "{vsn}"
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from contextlib import asynccontextmanager

EVENTS = {events}

@asynccontextmanager
async def lifespan(app):
    EVENTS.append("startup")
    yield {{"pool": "opened at startup"}}
    EVENTS.append("shutdown")

async def hello(request):
    return PlainTextResponse("{vsn} " + request.state.pool)

async def boom(request):
    raise RuntimeError("boom")

async def loop(websocket):
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        await websocket.send_text("{vsn} " + text)

async def crash_ws(websocket):
    await websocket.accept()
    raise RuntimeError("crash")

async def refuse_ws(websocket):
    return

app = Starlette(
    routes=[Route("/", hello), Route("/boom", boom), WebSocketRoute("/ws", loop),
            WebSocketRoute("/crash", crash_ws), WebSocketRoute("/refuse", refuse_ws)],
    lifespan=lifespan,
)
"""

HANDLER = """
__vsn__ = "{vsn}"

def init(req, args):
    if req["path"] == "/boom":
        raise RuntimeError("init crashed")
    return ("ok", {{"n": 0}})

def handle_frame(frame, state):
    if frame[1] == "crash":
        raise RuntimeError("crash")
    n = state["n"] + 1
    return ("reply", ("text", f"{vsn} {{n}}"), {{"n": n}})

def code_change(old_vsn, state, extra):
    return ("ok", state)
"""


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"website{next(_ids)}"
        self.handler = f"webhandler{next(_ids)}"
        self.events: list[str] = []
        root.mkdir(exist_ok=True)

    def write(self, vsn: str) -> None:
        src = SITE.format(
            vsn=vsn, events=f"__import__('sys').modules[{__name__!r}].EVENTS[{self.name!r}]"
        )
        (self.root / f"{self.name}.py").write_text(textwrap.dedent(src))
        (self.root / f"{self.handler}.py").write_text(textwrap.dedent(HANDLER.format(vsn=vsn)))


EVENTS: dict[str, list[str]] = {}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Node, Site, Any, int, int]]:
    s = Site(tmp_path / "code")
    EVENTS[s.name] = s.events
    s.write("v1")
    async with Node() as node:
        node.code.set_path([s.root])
        http = ListenerConfig(name="http", app=f"{s.name}:app")
        room = ListenerConfig(name="room", handler=s.handler)
        top = await sup.start("relhandler.web.listener", ("top", "t", (http, room)))
        hp, rp = await web.port("t", "http"), await web.port("t", "room")
        yield node, s, top, hp, rp


async def _get(port: int, path: str = "/") -> tuple[int, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_lifespan_state_reaches_requests_and_new_code_keeps_it(site: Any) -> None:
    node, s, _top, hp, _rp = site
    assert s.events == ["startup"]
    assert await _get(hp) == (200, b"v1 opened at startup")
    s.write("v2")
    node.code.load(s.name)  # what load_module does
    # the next request runs v2, with the state the v1 lifespan opened; no new startup
    assert await _get(hp) == (200, b"v2 opened at startup")
    assert s.events == ["startup"]


async def test_lifespan_shutdown_after_connections_when_the_listener_stops(site: Any) -> None:
    _node, s, top, hp, _rp = site
    ws = await websockets.connect(f"ws://127.0.0.1:{hp}/ws")
    await sup.terminate_child(top, "http")
    assert s.events == ["startup", "shutdown"]
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1012
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", hp)


async def test_looping_websocket_keeps_v1_and_brutal_purge_closes_it_with_1012(site: Any) -> None:
    node, s, _top, hp, _rp = site
    ws = await websockets.connect(f"ws://127.0.0.1:{hp}/ws")
    await ws.send("a")
    assert await ws.recv() == "v1 a"
    s.write("v2")
    node.code.load(s.name)
    await ws.send("b")
    assert await ws.recv() == "v1 b"  # its loop is v1 code, until it returns
    late = await websockets.connect(f"ws://127.0.0.1:{hp}/ws")
    await late.send("c")
    assert await late.recv() == "v2 c"  # a websocket opened after the load runs v2
    # soft: refused while the v1 loop runs, nothing closed
    assert node.code.soft_purge(s.name) is False
    await ws.send("d")
    assert await ws.recv() == "v1 d"
    # brutal: the process in old code is killed, its client told 1012; the v2 one stays
    assert node.code.purge(s.name) is True
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1012
    await late.send("e")
    assert await late.recv() == "v2 e"


async def test_app_errors_get_uvicorns_answers(site: Any) -> None:
    _node, _s, _top, hp, _rp = site
    assert (await _get(hp, "/boom"))[0] == 500
    crash = await websockets.connect(f"ws://127.0.0.1:{hp}/crash")
    await asyncio.wait_for(crash.wait_closed(), 5)
    assert crash.close_code == 1011
    with pytest.raises(websockets.InvalidStatus) as e:
        await websockets.connect(f"ws://127.0.0.1:{hp}/refuse")
    assert e.value.response.status_code == 403
    assert await _get(hp) == (200, b"v1 opened at startup")


async def test_behaviour_close_codes_crash_1011_stop_1001(site: Any) -> None:
    _node, _s, top, _hp, rp = site
    with pytest.raises(websockets.InvalidStatus) as e:  # init raised: 500, as uvicorn's 500
        await websockets.connect(f"ws://127.0.0.1:{rp}/boom")
    assert e.value.response.status_code == 500
    a = await websockets.connect(f"ws://127.0.0.1:{rp}/")
    b = await websockets.connect(f"ws://127.0.0.1:{rp}/")
    await a.send("crash")
    await asyncio.wait_for(a.wait_closed(), 5)
    assert a.close_code == 1011
    await b.send("x")
    assert await b.recv() == "v1 1"  # the crash was a's alone
    await sup.terminate_child(top, "room")
    await asyncio.wait_for(b.wait_closed(), 5)
    assert b.close_code == 1001


async def test_a_listener_adopts_the_socket_a_restart_handed_over(tmp_path: Path) -> None:
    s = Site(tmp_path / "code")
    EVENTS[s.name] = s.events
    s.write("v1")
    before = socket.socket()
    before.bind(("127.0.0.1", 0))
    before.listen(16)
    port = before.getsockname()[1]
    fd = os.dup(before.fileno())  # what the node before the exec left open
    before.close()
    handed = json.dumps([[fd, socket.AF_INET, "127.0.0.1", port]])
    assert listenfds.registry.inherit({listenfds.ENV: handed}) == 1
    # connected while nothing serves yet: the request waits in the backlog
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
    async with Node() as node:
        node.code.set_path([s.root])
        http = ListenerConfig(name="http", app=f"{s.name}:app", port=port)
        top = await sup.start("relhandler.web.listener", ("top", "t", (http,)))
        data = await asyncio.wait_for(r.read(), 10)
        w.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"v1 opened at startup")
        assert listenfds.registry.close_unadopted() == []  # it was adopted
        await sup.terminate_child(top, "http")
        with pytest.raises(ConnectionRefusedError):  # a normal stop closes it for good
            await asyncio.open_connection("127.0.0.1", port)


def _doc_block(after: str) -> str:
    """The first ```python block after the line ``after`` in docs/web.md, as written."""
    doc = (Path(__file__).parents[2] / "docs" / "web.md").read_text()
    rest = doc[doc.index(after) :]
    start = rest.index("```python\n") + len("```python\n")
    return textwrap.dedent(rest[start : rest.index("```", start)])


async def test_docs_examples_run_as_written(tmp_path: Path) -> None:
    """docs/web.md's chat/room.py (the behaviour) and chat/wsloop.py (the ASGI loop) as
    they are printed, behind a Starlette chat.site that gives the loop its ``answer``."""
    code = tmp_path / "code"
    (code / "chat").mkdir(parents=True)
    (code / "chat" / "__init__.py").write_text("")
    (code / "chat" / "room.py").write_text(_doc_block("## The websocket behaviour"))
    (code / "chat" / "wsloop.py").write_text(_doc_block("* **A websocket endpoint that loops"))
    (code / "chat" / "site.py").write_text(
        "from starlette.applications import Starlette\n"
        "from starlette.routing import WebSocketRoute\n"
        "import chat.wsloop\n\n"
        "def answer(n, text):\n    return f'{n}: {text}'\n\n"
        "app = Starlette(routes=[WebSocketRoute('/', chat.wsloop.ws)])\n"
    )
    async with Node() as node:
        node.code.set_path([code])
        room = ListenerConfig(name="room", handler="chat.room")
        site = ListenerConfig(name="site", app="chat.site:app")
        await sup.start("relhandler.web.listener", ("top", "docs", (room, site)))
        rp, sp = await web.port("docs", "room"), await web.port("docs", "site")
        async with websockets.connect(f"ws://127.0.0.1:{rp}/") as ws:
            await ws.send("hi")
            assert await ws.recv() == "#1 hi"
            (conn,) = [c.pid for c in sup.peek_children(node.whereis("web:docs:room:conns"))]
            node.send(conn, "news")  # handle_info answers it
            assert await ws.recv() == "news"
        async with websockets.connect(f"ws://127.0.0.1:{sp}/") as ws:
            await ws.send("a")
            assert await ws.recv() == "1: a"
            await ws.send("b")
            assert await ws.recv() == "2: b"
    mod: dict[str, Any] = {}
    exec(_doc_block("## The websocket behaviour"), mod)
    up = mod["code_change"]("1", {"n": 3}, None)
    assert up == ("ok", {"count": 3})
    assert mod["code_change"](("down", "1"), up[1], None) == ("ok", {"n": 3})
