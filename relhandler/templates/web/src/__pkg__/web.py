"""The Starlette app. Edit it, bump the version, build, and `relhandler install` the new
release: requests that arrive after the install run the new code; no connection closes.

A websocket endpoint that loops keeps the code it started with (as an Erlang process in old
code does), so its loop calls into this module through the live module
(`current(__name__).reply`, Erlang's `?MODULE:reply`), and that call runs the current
version: an open websocket answers in the new version.
"""

__vsn__ = "1"

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from relhandler.runtime import current

import {{pkg}}.visits


async def home(request):
    n = await {{pkg}}.visits.visit()
    return JSONResponse({"hello": "world", "visits": n, "version": __vsn__})


def reply(n, text):
    return f"#{n}: {text}"


async def echo(websocket):
    await websocket.accept()
    n = 0  # per-connection state: lives as long as the connection, across upgrades
    async for text in websocket.iter_text():
        n += 1
        await websocket.send_text(current(__name__).reply(n, text))


app = Starlette(routes=[Route("/", home), WebSocketRoute("/ws", echo)])
