"""The node's control ops on an in-process node with real modules (issue 4: reload, purge,
which, rpc, status), called the way the control server calls them."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.node_ops import jsonable, make_ops
from relhandler.control.server import Op
from relhandler.errors import (
    InputError,
    NoSuchModuleError,
    NotPurgedError,
    ProcessError,
    RelhandlerError,
    UsageError,
)
from relhandler.handler.events import EventLog
from relhandler.runtime import Node
from relhandler.runtime.application import AppController

_ids = itertools.count(1)

# a raw process looping by local calls: it stays on the version it started in
LOOPER = """
from relhandler.runtime import receive

VSN = {vsn!r}

async def loop():
    await receive()
    return loop()

def version():
    return VSN

async def slow_version():
    return VSN

def pair():
    return (1, "a")

def opaque():
    return object()

def boom():
    raise ValueError("bad input 7")
"""


async def until(pred: Callable[[], bool]) -> None:
    """Yield to the loop until ``pred()`` holds (a quiet point); bounded by turns, not time."""
    for _ in range(10_000):
        if pred():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


@dataclass
class FakeMain:
    """The parts of ``NodeMain`` the node ops read (no socket, no boot)."""

    node: Node
    root: Path
    release_name: str | None = "fx"
    release_version: str | None = "1.0.0"
    stopped: bool = False
    handler: Any = None  # no release handler: code loading takes no lock
    boot_id: str = "b00t"
    boot_failure: dict[str, Any] | None = None
    events: EventLog = field(default_factory=lambda: EventLog(None))
    confirmer: Any = None

    def request_stop(self, code: int = 0) -> None:
        self.stopped = True

    def request_restart(self) -> None:
        raise AssertionError("no op here restarts the node")


@dataclass
class Env:
    node: Node
    main: FakeMain
    ops: dict[str, Op]
    mod: str
    file: Path

    async def op(self, name: str, **args: Any) -> Any:
        async def progress(event: dict[str, Any]) -> None:
            raise AssertionError("node ops send no progress")

        return await self.ops[name](args, progress)

    def write(self, vsn: str) -> None:
        self.file.write_text(LOOPER.format(vsn=vsn))


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    code = tmp_path / "code"
    code.mkdir()
    mod = f"nodeops{next(_ids)}_looper"
    async with Node() as node:
        node.code.set_path([code])
        AppController(node)
        main = FakeMain(node, tmp_path)
        e = Env(node, main, make_ops(main), mod, code / f"{mod}.py")  # type: ignore[arg-type]
        e.write("v1")
        node.code.load(mod)
        yield e


async def test_ping_and_status(env: Env) -> None:
    assert await env.op("ping") == {
        "pong": True,
        "release": "1.0.0",
        "pid": os.getpid(),
        "boot_id": "b00t",
        "boot_failure": None,
    }
    env.node.spawn(env.node.code.current(env.mod).loop)
    st = await env.op("status")
    assert st["release"] == {"name": "fx", "version": "1.0.0"}
    assert st["pid"] == os.getpid() and st["processes"] == 1
    assert st["applications"] == [] and st["uptime_s"] >= 0
    assert st["modules_loaded"] >= 1


async def test_stop_asks_the_node_to_stop(env: Env) -> None:
    assert await env.op("stop") == {"stopping": True}
    assert env.main.stopped


async def test_which_reports_current_and_old(env: Env) -> None:
    w = await env.op("which", module=env.mod)
    assert w["current_file"] == str(env.file) and w["old_vsn"] is None
    env.write("v2")
    await env.op("reload", module=env.mod)
    w2 = await env.op("which", module=env.mod)
    assert w2["old_vsn"] == w["current_vsn"] and w2["current_vsn"] != w["current_vsn"]


async def test_reload_from_then_revert(env: Env, tmp_path: Path) -> None:
    patched = tmp_path / "patched.py"
    patched.write_text(LOOPER.format(vsn="patched"))
    w = await env.op("reload", module=env.mod, **{"from": str(patched)})
    assert w["current_file"] == str(patched)
    assert await env.op("rpc", module=env.mod, function="version", args=[]) == "patched"
    w = await env.op("reload", module=env.mod, revert=True)
    assert w["current_file"] == str(env.file)
    assert await env.op("rpc", module=env.mod, function="version", args=[]) == "v1"


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        pytest.param({}, UsageError, "missing 'module'", id="no-module"),
        pytest.param({"from": "/no/such.py"}, InputError, "no such file", id="from-missing"),
        pytest.param(
            {"from": "/x.py", "revert": True}, UsageError, "either --from", id="from-and-revert"
        ),
    ],
)
async def test_reload_bad_args(env: Env, args: dict[str, Any], error: type, message: str) -> None:
    if args:
        args = {"module": env.mod, **args}
    before = env.node.code.which(env.mod)
    with pytest.raises(error, match=message):
        await env.op("reload", **args)
    assert env.node.code.which(env.mod) == before


async def test_reload_refused_while_old_code_runs_then_purge(env: Env) -> None:
    pid = env.node.spawn(env.node.code.current(env.mod).loop)
    env.write("v2")
    await env.op("reload", module=env.mod)  # v1 becomes old; the looper stays in it
    await until(lambda: env.node.code.old_code_users(env.mod) == [pid])
    env.write("v3")
    with pytest.raises(NotPurgedError, match=str(pid)):
        await env.op("reload", module=env.mod)
    assert await env.op("purge", module=env.mod, soft=True) == {
        "module": env.mod,
        "purged": False,
    }
    assert pid in env.node.processes
    assert await env.op("purge", module=env.mod) == {"module": env.mod, "killed": True}
    await until(lambda: pid not in env.node.processes)  # the kill is a signal, as in OTP
    await env.op("reload", module=env.mod)
    assert await env.op("rpc", module=env.mod, function="version", args=[]) == "v3"


@pytest.mark.parametrize(
    ("module", "function", "args", "result"),
    [
        pytest.param(None, "slow_version", [], "v1", id="coroutine-awaited"),
        pytest.param(None, "pair", [], [1, "a"], id="tuple-as-list"),
        pytest.param("math", "hypot", [3, 4], 5.0, id="ordinary-module"),
        pytest.param("relhandler.runtime", "self_pid", [], "<0.", id="runs-in-a-process"),
    ],
)
async def test_rpc(
    env: Env, module: str | None, function: str, args: list[Any], result: Any
) -> None:
    got = await env.op("rpc", module=module or env.mod, function=function, args=args)
    if isinstance(result, str) and result.startswith("<0."):
        assert isinstance(got, str) and got.startswith(result)
    else:
        assert got == result


async def test_rpc_non_json_result_is_its_repr(env: Env) -> None:
    got = await env.op("rpc", module=env.mod, function="opaque", args=[])
    assert got.startswith("<object object at 0x")


@pytest.mark.parametrize(
    ("args", "error", "code", "message"),
    [
        pytest.param(
            {"function": "boom", "args": []},
            ProcessError,
            "rpc_failed",
            "raised ValueError: bad input 7",
            id="raises",
        ),
        pytest.param({"function": "nope", "args": []}, UsageError, "usage", "nope", id="no-fun"),
        pytest.param(
            {"function": "pair", "args": {}}, UsageError, "usage", "JSON array", id="args"
        ),
        pytest.param({"args": []}, UsageError, "usage", "'function'", id="no-function"),
    ],
)
async def test_rpc_errors(
    env: Env, args: dict[str, Any], error: type[RelhandlerError], code: str, message: str
) -> None:
    with pytest.raises(error, match=message) as ei:
        await env.op("rpc", module=env.mod, **args)
    assert ei.value.code == code


async def test_rpc_unknown_module(env: Env) -> None:
    with pytest.raises(UsageError, match="relhandler which no_such_mod_xyz"):
        await env.op("rpc", module="no_such_mod_xyz", function="f", args=[])


async def test_which_unknown_module(env: Env) -> None:
    with pytest.raises(NoSuchModuleError, match="'no_such_mod_xyz' is not loaded"):
        await env.op("which", module="no_such_mod_xyz")


def test_jsonable() -> None:
    assert jsonable({"a": (1, 2)}) == {"a": [1, 2]}
    assert jsonable({1, 2}) == repr({1, 2})


async def test_reload_migrate_answers_the_report_and_kills_the_oldest_code(env: Env) -> None:
    pid = env.node.spawn(env.node.code.current(env.mod).loop)
    env.write("v2")
    r = await env.op("reload", module=env.mod, migrate=True)
    assert (r["module"], r["change"], r["old_code"], r["killed"]) == (
        env.mod,
        "load",
        [str(pid)],
        [],
    )
    assert r["vsn"] == env.node.code.vsn(env.mod) and r["file"] == str(env.file)
    env.write("v3")  # where the plain reload is refused, the safe one purges, as c/1 does
    r = await env.op("reload", module=env.mod, migrate=True)
    assert r["killed"] == [str(pid)]
    assert await env.op("rpc", module=env.mod, function="version", args=[]) == "v3"


async def test_reload_migrate_takes_no_file(env: Env, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--migrate reloads from the code path"):
        await env.op("reload", module=env.mod, migrate=True, revert=True)
