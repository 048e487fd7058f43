"""A release project whose processes use asyncio libraries (issue 14, items 3 and 6).

``wsc.client`` is a GenServer that owns a real ``websockets`` client connection: it
connects in an async ``init``, ``forward`` turns the incoming messages into mailbox messages,
```terminate`` closes it. ``wsc.slow`` answers a slow call through ``gen_server.spawn_reply``
(its backend, ``wsc.backend``, awaits for as long as it is told). Version 2 changes both
servers (their replies name the version; ``code_change`` adds a field) and nothing else.
websockets is bundled with the release (``include_deps``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.fixtures.mkroot import cli

PYPROJECT = """
[project]
name = "wsc"
version = "{vsn}"
requires-python = ">=3.11"
dependencies = ["websockets>=12"]

[tool.relhandler.release]
name = "wsc"
applications = ["wsc"]
include_deps = true

[tool.relhandler.apps.wsc]
path = "src/wsc"
start = "wsc.app:start"
"""

FILES = {
    "__init__.py": "",
    "app.py": """
        from relhandler.runtime import supervisor

        async def start():
            return await supervisor.start_link("wsc.sup", "top", name="wsc_sup")
    """,
    "sup.py": """
        def init(args):
            if args == "top":
                return ("ok", ({"strategy": "one_for_one", "intensity": 5, "period": 10}, [
                    {"id": "slow", "start": ("wsc.slow", "start_link", []),
                     "modules": ["wsc.slow"]},
                    {"id": "clients", "start": ("wsc.sup", "start_clients", []),
                     "type": "supervisor", "modules": ["wsc.sup"]},
                ]))
            return ("ok", ({"strategy": "simple_one_for_one", "intensity": 0}, [
                {"id": "client", "start": ("wsc.client", "start_link", []),
                 "restart": "temporary", "modules": ["wsc.client"]}]))

        def start_clients():
            from relhandler.runtime import supervisor
            return supervisor.start_link("wsc.sup", "clients", name="wsc_clients")
    """,
    "backend.py": """
        import asyncio

        async def lookup(key, delay):
            await asyncio.sleep(delay)
            if key == "bad":
                raise KeyError(key)
            return "value of " + key
    """,
    "api.py": """
        from relhandler.runtime import current_node, exit, gen_server, supervisor

        _watched = []

        async def start_client(url):
            r = await supervisor.start_child("wsc_clients", [url])
            return str(r[1])

        def _client():
            from relhandler.runtime import Pid
            (c,) = [p for p in current_node().processes.values()
                    if p.initial_call == "wsc.client:init"]
            return c

        async def ask(text):
            return await gen_server.call(_client().pid, ("ask", text))

        async def client_state():
            from relhandler.runtime import sys
            st = await sys.get_state(_client().pid)
            return {k: v for k, v in st.items() if k in ("pushed", "upgraded")}

        def client_pid():
            return str(_client().pid)

        def watch_client_tasks():
            # the client's child tasks: its pump and websockets' own (keepalive)
            _watched[:] = list(_client().tasks or ())
            return len(_watched)

        def watched_tasks_done():
            return [t.done() for t in _watched]

        def kill_client():
            exit(_client().pid, "kill")
            return "killed"

        async def slow(key, delay):
            return await gen_server.call("wsc_slow", ("lookup", key, delay), timeout=30)

        async def fast():
            return await gen_server.call("wsc_slow", "fast")

        async def slow_error():
            try:
                await gen_server.call("wsc_slow", ("lookup", "bad", 0.1))
            except KeyError as e:
                return "KeyError " + str(e)
            return "no error"
    """,
}

CLIENT = """
import websockets

from relhandler.runtime import forward, gen_server, trap_exit

VERSION = "{v}"


def start_link(url):
    return gen_server.start_link(__name__, url)


async def init(url):
    trap_exit(True)
    ws = await websockets.connect(url)
    # each message arrives as ("ws", msg), the end as ("ws_closed", error_or_None)
    return ("ok", {{"ws": ws, "pump": forward(ws, "ws"), "waiting": [], "pushed": 0}})


async def handle_call(req, from_, state):
    if req[0] == "ask":
        await state["ws"].send(req[1])
        return ("noreply", {{**state, "waiting": state["waiting"] + [from_]}})
    return ("reply", None, state)


def handle_info(msg, state):
    if msg[0] == "ws":
        if msg[1].startswith("push"):
            return ("noreply", {{**state, "pushed": state["pushed"] + 1}})
        first, *rest = state["waiting"]
        gen_server.reply(first, VERSION + " got " + msg[1])
        return ("noreply", {{**state, "waiting": rest}})
    if msg[0] == "ws_closed":
        import logging
        ws = state["ws"]
        logging.getLogger("wsc").warning("ws closed %r %r", ws.close_code, ws.close_reason)
        return ("stop", "normal", state)
    return ("noreply", state)


async def terminate(reason, state):
    await state["ws"].close()
{extra}
"""

CLIENT_V1_EXTRA = """

def code_change(old_vsn, state, extra):
    return ("ok", {k: v for k, v in state.items() if k != "upgraded"})
"""

CLIENT_V2_EXTRA = """

def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple):  # down
        return ("ok", {k: v for k, v in state.items() if k != "upgraded"})
    return ("ok", {**state, "upgraded": True})
"""

SLOW = """
from relhandler.runtime import gen_server

from wsc import backend

VERSION = "{v}"


def start_link():
    return gen_server.start_link(__name__, None, name="wsc_slow")


def init(args):
    return ("ok", {{"served": 0}})


def handle_call(req, from_, state):
    if req[0] == "lookup":
        gen_server.spawn_reply(from_, backend.lookup, req[1], req[2])
        return ("noreply", state)
    if req == "fast":
        return ("reply", [VERSION, state["served"]], {{**state, "served": state["served"] + 1}})
    return ("reply", None, state)
{extra}
"""

SLOW_CODE_CHANGE = """

def code_change(old_vsn, state, extra):
    return ("ok", state)
"""

APPUP = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [
  ["update", "wsc.client", { change = "advanced", extra = [] }],
  ["update", "wsc.slow", { change = "advanced", extra = [] }],
]

[[down]]
to = "1.0.0"
instructions = [
  ["update", "wsc.client", { change = "advanced", extra = [] }],
  ["update", "wsc.slow", { change = "advanced", extra = [] }],
]
"""


def build(work: Path) -> Path:
    """Build wsc 1.0.0 and 2.0.0 and the relup; returns the output dir."""
    out = work / "rel"
    for vsn in ("1.0.0", "2.0.0"):
        proj = work / f"wsc-{vsn}"
        pkg = proj / "src" / "wsc"
        pkg.mkdir(parents=True)
        (proj / "pyproject.toml").write_text(PYPROJECT.format(vsn=vsn))
        for name, src in FILES.items():
            (pkg / name).write_text(textwrap.dedent(src))
        v2 = vsn == "2.0.0"
        (pkg / "client.py").write_text(
            CLIENT.format(v="v2" if v2 else "v1", extra=CLIENT_V2_EXTRA if v2 else CLIENT_V1_EXTRA)
        )
        (pkg / "slow.py").write_text(SLOW.format(v="v2" if v2 else "v1", extra=SLOW_CODE_CHANGE))
        if v2:
            (pkg / "wsc.appup.toml").write_text(APPUP)
        cli("build", "--project", str(proj), "--out", str(out), check=True, timeout=300)
    cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "wsc"), check=True)
    return out
