"""The Starlette app. Edit it, bump the version, build, and `relhandler install` the new
release: requests that arrive after the install run the new code; no connection closes.

A websocket endpoint that loops keeps the code it started with (as an Erlang process in old
code does), and purging that old code (make-permanent, or the next upgrade) would kill it.
So the loop lives in `wsloop.py`, which no version changes, and answers through `reply`
here, looked up on the current version for every message: an open websocket answers in
the new version and stays open.
"""

__vsn__ = "1"

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

import {{pkg}}.visits
import {{pkg}}.wsloop


async def home(request):
    n = await {{pkg}}.visits.visit()
    return JSONResponse({"hello": "world", "visits": n, "version": __vsn__})


def reply(n, text):
    return f"#{n}: {text}"


app = Starlette(routes=[Route("/", home), WebSocketRoute("/ws", {{pkg}}.wsloop.echo)])
