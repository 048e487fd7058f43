"""Two of issue 13's sys/gen_server differences, checked on an in-process node.

* One unit in the Python API: a behaviour's callback timeout is in seconds, an int as much
  as a float (OTP's are milliseconds; an int used to be read as milliseconds here).
* The cyclic collector is off only for the install's own work: a sync ``code_change`` runs
  with it off, an async one's awaits run with it on, and it is on again afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relhandler.handler.reload import reload_module
from relhandler.runtime import Node, gen_server, sys

from .conftest import CodeDir

TIMEOUT_SERVER = """
from relhandler.runtime import gen_server

def init(args):
    return ("ok", [])

def handle_call(req, from_, state):
    # an int timeout: one second, not one millisecond
    return ("reply", "armed", state, 1)

def handle_info(msg, state):
    return ("noreply", state + [msg])
"""

SERVER = """
from relhandler.runtime import gen_server

def init(args):
    return ("ok", {{"n": 0}})

def handle_call(req, from_, state):
    state = {{**state, "n": state["n"] + 1}}
    return ("reply", state, state)

def handle_cast(msg, state):
    return ("noreply", state)
{extra}
"""

SYNC_CC = """
import gc, json

def code_change(old_vsn, state, extra):
    with open({log!r}, "a") as f:
        f.write(json.dumps(gc.isenabled()) + "\\n")
    return ("ok", {{**state, "v": 2}})
"""

ASYNC_CC = """
import asyncio, gc, json

async def code_change(old_vsn, state, extra):
    await asyncio.sleep(0.01)
    with open({log!r}, "a") as f:
        f.write(json.dumps(gc.isenabled()) + "\\n")
    return ("ok", {{**state, "v": 2}})
"""


@pytest.fixture
async def node(code_dir: CodeDir) -> AsyncIterator[Node]:
    async with Node() as n:
        n.code.set_path([code_dir.root])
        yield n


async def test_an_int_callback_timeout_is_seconds(node: Node, code_dir: CodeDir) -> None:
    mod = code_dir.name("tmo")
    code_dir.write("tmo", TIMEOUT_SERVER)
    pid = await gen_server.start(mod, None)
    assert await gen_server.call(pid, "arm") == "armed"
    await asyncio.sleep(0.3)
    # read as milliseconds it would have fired already; reading the state is a system
    # message, which restarts the timer (as in OTP), so it is due 1 s after this read
    assert (await sys.get_state(pid)) == []
    await asyncio.sleep(1.7)
    assert (await sys.get_state(pid)) == ["timeout"]


@pytest.mark.parametrize(("source", "expect"), [(SYNC_CC, False), (ASYNC_CC, True)])
async def test_the_collector_is_off_only_for_the_installs_own_work(
    node: Node, code_dir: CodeDir, tmp_path: Path, source: str, expect: bool
) -> None:
    assert gc.isenabled()
    log = tmp_path / "gc.log"
    mod = code_dir.name("srv")
    code_dir.write("srv", SERVER.format(extra=""))
    pid = await gen_server.start(mod, None)
    await gen_server.call(pid, "x")
    code_dir.write("srv", SERVER.format(extra=source.format(log=str(log))))
    r = await reload_module(node, mod)
    assert r.migrated == (pid,)
    assert (await sys.get_state(pid)) == {"n": 1, "v": 2}
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    # the preflight's trial ran it too; the last line is the real, suspended migration
    assert seen and seen[-1] is expect
    assert gc.isenabled()
