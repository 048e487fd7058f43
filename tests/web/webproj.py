"""A release project served by relhandler.web, in two versions (for the e2e tests).

``webt.site`` holds the Starlette app (HTTP ``/`` answers its version); ``webt.wsloop`` is
the websocket endpoint's loop, a module no upgrade changes, which answers every message
through a qualified call into ``webt.site`` (so an open websocket answers in the new version
while its loop, and its per-connection counter, carry on). ``webt.room`` is a websocket
behaviour handler whose per-connection state changes shape between versions.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.fixtures.mkroot import cli

PYPROJECT = """
[project]
name = "webt"
version = "{vsn}"
requires-python = ">=3.11"
dependencies = ["starlette>=0.37"]

[tool.relhandler.release]
name = "webt"
applications = ["webt"]
include_deps = true

[tool.relhandler.apps.webt]
path = "src/webt"
start = "webt.app:start"

[[tool.relhandler.apps.webt.env.listeners]]
name = "http"
app = "webt.site:app"
ws_max_size = 1048576
header_timeout = 2
ws_ping_interval = 1
ws_ping_timeout = 2

[[tool.relhandler.apps.webt.env.listeners]]
name = "room"
handler = "webt.room"
ws_max_size = 1048576
header_timeout = 2
ws_ping_interval = 1
ws_ping_timeout = 2
"""

APP = """
from relhandler import web
from relhandler.runtime import supervisor


async def start():
    return await supervisor.start_link("webt.sup", None, name="webt_sup")


async def ports():
    return [await web.port("webt", "http"), await web.port("webt", "room")]
"""

SUP = """
from relhandler import web


def init(args):
    return ("ok", ({"strategy": "one_for_one", "intensity": 5, "period": 10},
                   [web.child_spec("webt")]))
"""

SITE = """
__vsn__ = "{n}"

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

import webt.wsloop

VSN = "v{n}"


async def hello(request):
    return PlainTextResponse(VSN)


def answer(n, text):
    return f"{{VSN}} {{n}} {{text}}"


app = Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", webt.wsloop.ws)])
"""

WSLOOP = """
import webt.site as site


async def ws(websocket):
    await websocket.accept()
    n = 0
    while True:
        text = await websocket.receive_text()
        n += 1
        await websocket.send_text(site.answer(n, text))
"""

ROOM_V1 = """
__vsn__ = "1"


def init(req, args):
    if "chat" in req["subprotocols"]:
        return ("ok", {"n": 0}, {"subprotocol": "chat"})
    return ("ok", {"n": 0})


def handle_frame(frame, state):
    n = state["n"] + 1
    return ("reply", ("text", f"v1 n={n}"), {"n": n})


def code_change(old_vsn, state, extra):
    return ("ok", state)
"""

ROOM_V2 = """
__vsn__ = "2"


def init(req, args):
    return ("ok", {"count": 0, "since": "v2"})


def handle_frame(frame, state):
    c = state["count"] + 1
    return ("reply", ("text", f"v2 count={c} since={state['since']}"), {**state, "count": c})


def code_change(old_vsn, state, extra):
    # OTP: a downgrade runs the current (v2) code_change with ("down", old) before loading v1
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        return ("ok", {"n": state["count"]})
    return ("ok", {"count": state["n"], "since": "v1"})
"""

APPUP = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [
  ["load_module", "webt.site"],
  ["update", "webt.room", { change = "advanced" }],
]

[[down]]
to = "1.0.0"
instructions = [
  ["update", "webt.room", { change = "advanced" }],
  ["load_module", "webt.site"],
]
"""


def write_version(proj: Path, n: int) -> None:
    src = proj / "src" / "webt"
    src.mkdir(parents=True, exist_ok=True)
    files = {
        proj / "pyproject.toml": PYPROJECT.format(vsn=f"{n}.0.0"),
        src / "__init__.py": "",
        src / "app.py": APP,
        src / "sup.py": SUP,
        src / "site.py": SITE.format(n=n),
        src / "wsloop.py": WSLOOP,
        src / "room.py": ROOM_V1 if n == 1 else ROOM_V2,
        src / "webt.appup.toml": 'version = "1.0.0"\nup = []\ndown = []\n' if n == 1 else APPUP,
    }
    for path, text in files.items():
        path.write_text(textwrap.dedent(text).lstrip())


def build(work: Path) -> Path:
    """Build webt 1.0.0 and 2.0.0 and the relup; returns the output dir."""
    out = work / "rel"
    for n in (1, 2):
        proj = work / f"v{n}"
        write_version(proj, n)
        cli("build", "--project", str(proj), "--out", str(out), check=True, timeout=300)
    cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "webt"), check=True)
    return out
