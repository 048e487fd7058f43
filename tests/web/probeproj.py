"""A release project whose raw ASGI app shows what the server hands it (acceptance tests).

``probe.site`` is a plain ASGI 3 callable (no framework between the server and the test):
``/scope`` answers the request's scope as JSON, ``/echo`` its body, ``/stream`` a body in
chunks, ``/forever`` a body that never ends (it counts, in ``probe.store``, streams that
saw their client go), ``/ws`` a websocket echo that picks the first offered subprotocol and
``/push`` a websocket that only sends. ``probe.store`` never changes between versions, so its
counters survive an upgrade. The ``tls`` listener serves the same app over TLS; its
certificate and key paths are written into the project, and the ``room`` listener serves a
websocket behaviour (``probe.room``) over TLS too.
The lifespan writes its events to the file ``$PROBE_LOG``, when set, and fails its startup
when ``$PROBE_FAIL_STARTUP`` is set.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.fixtures.mkroot import cli

PYPROJECT = """
[project]
name = "probe"
version = "{vsn}"
requires-python = ">=3.11"

[tool.relhandler.release]
name = "probe"
applications = ["probe"]

[tool.relhandler.apps.probe]
path = "src/probe"
start = "probe.app:start"

[[tool.relhandler.apps.probe.env.listeners]]
name = "http"
app = "probe.site:app"
ws_max_size = 65536
header_timeout = 2
root_path = "/pre"

[[tool.relhandler.apps.probe.env.listeners]]
name = "tls"
app = "probe.site:app"
certfile = "{cert}"
keyfile = "{key}"

[[tool.relhandler.apps.probe.env.listeners]]
name = "room"
handler = "probe.room"
certfile = "{cert}"
keyfile = "{key}"
"""

APP = """
from relhandler import web
from relhandler.runtime import supervisor


async def start():
    return await supervisor.start_link("probe.sup", None, name="probe_sup")


async def ports():
    return [await web.port("probe", n) for n in ("http", "tls", "room")]
"""

SUP = """
from relhandler import web


def init(args):
    return ("ok", ({"strategy": "one_for_one", "intensity": 5, "period": 10},
                   [web.child_spec("probe")]))
"""

STORE = """
STATS = {"forever": 0, "forever_gone": 0, "push": 0, "push_gone": 0}


def stats():
    return dict(STATS)
"""

SITE = """
__vsn__ = "{n}"

import asyncio
import json
import os

from probe.store import STATS

VSN = "v{n}"


def _log(event):
    path = os.environ.get("PROBE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(event + "\\n")


def _plain(v):
    if isinstance(v, bytes):
        return {{"bytes": v.decode("latin-1")}}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {{k: _plain(x) for k, x in v.items()}}
    return v


async def _answer(send, body, status=200, ctype=b"text/plain"):
    await send({{"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]}})
    await send({{"type": "http.response.body", "body": body}})


async def lifespan(scope, receive, send):
    while True:
        msg = await receive()
        _log(msg["type"] + " " + VSN)
        if msg["type"] == "lifespan.startup" and os.environ.get("PROBE_FAIL_STARTUP"):
            await send({{"type": "lifespan.startup.failed", "message": "no database"}})
            return
        if msg["type"] == "lifespan.startup":
            scope["state"]["opened_by"] = VSN
            await send({{"type": "lifespan.startup.complete"}})
        else:
            await send({{"type": "lifespan.shutdown.complete"}})
            return


async def http(scope, receive, send):
    path = scope["path"]
    if path.endswith("/scope"):
        s = {{k: v for k, v in scope.items()}}
        return await _answer(send, json.dumps(_plain(s)).encode(), ctype=b"application/json")
    if path.endswith("/echo"):
        body, chunks = b"", 0
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            chunks += 1
            if not msg.get("more_body"):
                break
        return await _answer(send, body)
    if path.endswith("/stream"):
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        for i in range(3):
            await send({{"type": "http.response.body", "body": b"%d;" % i, "more_body": True}})
            await asyncio.sleep(0.05)
        await send({{"type": "http.response.body", "body": VSN.encode()}})
        return
    if path.endswith("/forever"):
        STATS["forever"] += 1
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        try:
            while True:
                await send({{"type": "http.response.body", "body": b"tick\\n", "more_body": True}})
                await asyncio.sleep(0.02)
        except OSError:
            STATS["forever_gone"] += 1  # ASGI 2.4: send on a closed connection raises
            raise
    if path.endswith("/slow"):
        await asyncio.sleep(1.0)
        return await _answer(send, b"slow " + VSN.encode())
    return await _answer(send, VSN.encode())


async def ws(scope, receive, send):
    msg = await receive()
    assert msg["type"] == "websocket.connect"
    if scope["path"].endswith("/push"):
        await send({{"type": "websocket.accept"}})
        STATS["push"] += 1
        try:
            while True:
                await send({{"type": "websocket.send", "text": "tick"}})
                await asyncio.sleep(0.02)
        except OSError:
            STATS["push_gone"] += 1
            raise
    protos = scope.get("subprotocols") or []
    await send({{"type": "websocket.accept", "subprotocol": protos[0] if protos else None}})
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("text", "").startswith("close "):
            code = int(msg["text"].split()[1])
            await send({{"type": "websocket.close", "code": code, "reason": "asked"}})
            return
        if msg.get("text") == "scope":
            await send({{"type": "websocket.send", "text": json.dumps(_plain(dict(scope)))}})
        elif msg.get("text") is not None:
            await send({{"type": "websocket.send", "text": VSN + " " + msg["text"]}})
        else:
            await send({{"type": "websocket.send", "bytes": msg["bytes"]}})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "http":
        return await http(scope, receive, send)
    return await ws(scope, receive, send)
"""

ROOM = """
def init(req, args):
    return ("ok", 0)


def handle_frame(frame, n):
    return ("reply", ("text", f"room {{n + 1}} {{frame[1]}}"), n + 1)
"""

APPUP = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [["load_module", "probe.site"]]

[[down]]
to = "1.0.0"
instructions = [["load_module", "probe.site"]]
"""


def write_version(proj: Path, n: int, cert: Path, key: Path) -> None:
    src = proj / "src" / "probe"
    src.mkdir(parents=True, exist_ok=True)
    files = {
        proj / "pyproject.toml": PYPROJECT.format(vsn=f"{n}.0.0", cert=cert, key=key),
        src / "__init__.py": "",
        src / "app.py": APP,
        src / "sup.py": SUP,
        src / "store.py": STORE,
        src / "site.py": SITE.format(n=n),
        src / "room.py": ROOM.format(),
        src / "probe.appup.toml": 'version = "1.0.0"\nup = []\ndown = []\n' if n == 1 else APPUP,
    }
    for path, text in files.items():
        path.write_text(textwrap.dedent(text).lstrip())


def self_signed(work: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (openssl), as (cert, key)."""
    import subprocess

    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def build(work: Path) -> Path:
    """Build probe 1.0.0 and 2.0.0 and the relup; returns the output dir."""
    cert, key = self_signed(work)
    out = work / "rel"
    for n in (1, 2):
        proj = work / f"v{n}"
        write_version(proj, n, cert, key)
        cli("build", "--project", str(proj), "--out", str(out), check=True, timeout=300)
    cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "probe"), check=True)
    return out
