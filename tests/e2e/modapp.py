"""A release of ordinary modern Python (issue 14): dataclasses under future annotations,
pydantic v2 models with forward references, attrs, an Enum and singledispatch, in managed
modules, held in a GenServer's state next to live resources (a StreamWriter, an fd owned by
a pure-Python wrapper). v2 adds a field to a model; ``code_change`` migrates both ways.

pydantic and attrs are the release's own dependencies, bundled into its lib dir by
``relhandler build`` (``include_deps``): the node imports them from the release.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fixtures.modern import MODERN, PROBE_FILE

__all__ = ["build_modapp", "models_source"]

PYPROJECT = """
[project]
name = "modapp"
version = "{v}"
requires-python = ">=3.11"
dependencies = ["pydantic>=2", "attrs>=23"]

[tool.relhandler.release]
name = "modapp"
applications = ["modapp"]
include_deps = true

[tool.relhandler.apps.modapp]
path = "src/modapp"
start = "modapp.app:start"
"""

APP = """
from relhandler.runtime import supervisor


async def start():
    return await supervisor.start_link("modapp.sup", None, name="modapp_sup")
"""

SUP = """
def init(args):
    return ("ok", ({"strategy": "one_for_one", "intensity": 5, "period": 10}, [
        {"id": "store", "start": ("modapp.store", "start_link", []),
         "modules": ["modapp.store"]},
    ]))
"""

ECHO = """
async def serve(reader, writer):
    # a plain asyncio callback of asyncio.start_server (not a process; never upgraded)
    while line := await reader.readline():
        writer.write(b"echo " + line)
        await writer.drain()
    writer.close()
"""

STORE = """
import asyncio
import os
import pickle

from relhandler.runtime import gen_server, whereis

from modapp import echo, models

__vsn__ = VERSION = "{v}"


class FdOwner:
    # a pure-Python fd wrapper: whoever collects it closes the fd
    def __init__(self, fd):
        self.fd = fd

    def __del__(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


def start_link():
    return gen_server.start_link(__name__, None, name="modapp_store")


async def report():
    return await gen_server.call("modapp_store", "report")


async def live_resources():
    return await gen_server.call("modapp_store", "live_resources")


def pid():
    return str(whereis("modapp_store"))


async def init(args):
    server = await asyncio.start_server(echo.serve, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.sockets[0].getsockname()[1]
    )
    r, w = os.pipe()
    orders = [
        models.Order(items=[models.Item(name="apple", qty=2)],
                     customer=models.Customer(name="ada")),
        models.Order(items=[]),
    ]
    return ("ok", {{
        "orders": orders,
        "cart": models.Cart(items=[], total=3),
        "box": models.Box([1, 2]),
        "color": models.Color.GREEN,
        "server": server, "reader": reader, "writer": writer,
        "pipe_r": r, "fd": FdOwner(w),
    }})


def _report(state):
    data = {{k: state[k] for k in ("orders", "cart", "box", "color")}}
    back = pickle.loads(pickle.dumps(data))  # instances of the current classes pickle
    return {{
        "version": VERSION,
        "models_vsn": models.__vsn__,
        "orders": [o.model_dump() for o in state["orders"]],
        "current_classes": [
            all(type(o) is models.Order for o in state["orders"]),
            all(type(i) is models.Item for o in state["orders"] for i in o.items),
            type(state["cart"]) is models.Cart,
            type(state["box"]) is models.Box,
            state["color"] is models.Color.GREEN,
        ],
        "pickled": back["orders"] == state["orders"] and back["box"] == state["box"],
        "describe": [models.describe(state["color"]), models.describe(state["cart"].total)],
        "cart": [state["cart"].KIND, state["cart"].total],
    }}


async def handle_call(req, from_, state):
    if req == "report":
        return ("reply", _report(state), state)
    if req == "live_resources":
        state["writer"].write(b"ping\\n")
        await state["writer"].drain()
        line = await asyncio.wait_for(state["reader"].readline(), 5)
        os.write(state["fd"].fd, b"x")  # the live fd is still open
        return ("reply", [line.decode(), os.read(state["pipe_r"], 1).decode()], state)
    return ("reply", "unknown", state)


def handle_cast(msg, state):
    return ("noreply", state)


def _convert(state, order_extra):
    # instances belong to the version of the class that made them: rebuild each one with
    # the current classes of modapp.models
    orders = [models.Order.model_validate({{**o.model_dump(exclude={{"note"}}), **order_extra}})
              for o in state["orders"]]
    cart = models.Cart(items=list(state["cart"].items), total=state["cart"].total)
    return {{**state, "orders": orders, "cart": cart, "box": models.Box(list(state["box"].content)),
            "color": models.Color[state["color"].name]}}


def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        return ("ok", _convert(state, {{}}))
    return ("ok", _convert(state, {{"note": "migrated from " + str(old_vsn)}}))
"""

# the same in both versions, so the relup does not load it: its model holds the Item class
# of the models version current when it loaded (check warns: docs/references.md)
SCHEMAS = """
import pydantic

from modapp import models


class Basket(pydantic.BaseModel):
    items: list[models.Item] = []
"""

# new in v2: executed by the preflight in a scratch module before it is installed
TAGS = """
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class Tag:
    SEEN: ClassVar[list[str]] = []
    name: str
    aliases: list[str] = field(default_factory=list)


def fields():
    return [f.name for f in dataclasses.fields(Tag)]
"""

APPUP = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [
  ["add_module", "modapp.tags"],
  ["load_module", "modapp.models"],
  ["update", "modapp.store", { change = "advanced", extra = [], dep_mods = ["modapp.models"] }],
]

# down: OTP runs code_change *before* loading the old store, in v2's code; models goes back
# first so that this code_change rebuilds the instances with v1's classes
[[down]]
to = "1.0.0"
instructions = [
  ["load_module", "modapp.models"],
  ["update", "modapp.store", { change = "advanced", extra = [] }],
  ["delete_module", "modapp.tags"],
]
"""


def models_source(vsn: str) -> str:
    """modapp.models of version ``vsn``: v2's Order has a ``note`` field more."""
    extra = "" if vsn == "1.0.0" else "\n    note: str = ''"
    return MODERN.format(vsn=vsn, order_extra=extra)


def _cli(*args: str, env: dict[str, str] | None = None) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "relhandler.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if r.returncode != 0:
        raise AssertionError(f"relhandler {' '.join(args)}: {r.stderr.strip()}")


def build_modapp(tmp: Path) -> Path:
    """Build modapp 1.0.0 and 2.0.0 and the relup; returns the output dir.

    The wheels are fetched once (pip's own registry access), and both builds install them
    from that directory."""
    wheels = tmp / "wheels"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"),
            *("--only-binary=:all:", "--dest", str(wheels), "pydantic>=2", "attrs>=23"),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    out = tmp / "modapp-rel"
    for vsn in ("1.0.0", "2.0.0"):
        proj = tmp / f"modapp-{vsn}"
        pkg = proj / "src" / "modapp"
        pkg.mkdir(parents=True)
        (proj / "pyproject.toml").write_text(PYPROJECT.format(v=vsn))
        files = {
            "__init__.py": "",
            "app.py": APP,
            "sup.py": SUP,
            "echo.py": ECHO,
            "store.py": STORE.format(v=vsn),
            "models.py": models_source(vsn),
            "probe.py": PROBE_FILE.read_text(),
            "schemas.py": SCHEMAS,
        }
        if vsn == "2.0.0":
            files["tags.py"] = TAGS
            (pkg / "modapp.appup.toml").write_text(APPUP)
        for name, src in files.items():
            (pkg / name).write_text(textwrap.dedent(src))
        _cli("build", "--project", str(proj), "--out", str(out), env=env)
    _cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "modapp"))
    return out
