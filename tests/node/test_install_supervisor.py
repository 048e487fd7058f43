"""The installer upgrades a supervisor the OTP way, in both directions (issue 13).

In-process node, the installer driven directly with low-level relup terms: a module that
is both a supervisor's and its workers' callback module (the sample app's chat.py
pattern) passes the preflight and the install up and down; the supervisor's own
code_change re-runs init (the new module's up, the old one's down, after the load).
"""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

from relhandler.errors import InstallError
from relhandler.handler.install import Installer, InstallOptions
from relhandler.release.model import AppSpec
from relhandler.runtime import Node, gen_server, supervisor
from relhandler.runtime.application import AppController

from .conftest import CodeDir

TOP = """
from relhandler.runtime import supervisor

def start():
    return supervisor.start_link(__name__, None, name="{p}top")

def init(args):
    return ("ok", ({{"strategy": "one_for_one"}}, [
        {{"id": "conns", "start": ("{chat}", "start_sup", []), "type": "supervisor",
          "modules": ["{chat}"]}}]))
"""

# no code_change for the supervisor side: the supervisor's own one is used
CHAT = """
__vsn__ = "{v}"
from relhandler.runtime import gen_server, supervisor

def start_sup():
    return supervisor.start_link(__name__, "sup", name="{p}conns")

def start_conn(i):
    return gen_server.start_link(__name__, i)

def init(args):
    if args == "sup":
        return ("ok", ({{"strategy": "simple_one_for_one", "intensity": {intensity}}},
                       [{{"id": "conn", "start": (__name__, "start_conn", []),
                         "restart": "temporary", "modules": [__name__]}}]))
    return ("ok", {{"i": args}})

def handle_call(req, from_, state):
    return ("reply", ("{v}", state), state)

def handle_cast(msg, state):
    return ("noreply", state)

def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        return ("ok", {{"i": state["i"]}})
    return ("ok", {{**state, "v2": old_vsn}})
"""


def _script(chat: str, mode: str) -> list[Any]:
    return [
        ["load_object_code", "app", "x", [chat]],
        "point_of_no_return",
        ["suspend", [chat]],
        ["load", chat, "brutal_purge", "brutal_purge"],
        ["code_change", mode, [[chat, []]]],
        ["resume", [chat]],
    ]


async def _install(node: Node, chat: str, mode: str, lib: Path) -> list[dict[str, Any]]:
    inst = Installer(
        node,
        _script(chat, mode),
        mode=mode,
        lib_dir=lambda app, vsn: lib,
        new_path=list(node.code.path),
        new_specs=[],
        new_env={},
        options=InstallOptions(),
    )
    inst.check()
    await inst.run_before_pnr()
    failures = await inst.preflight()
    if not failures:
        await inst.execute()
    return failures


async def test_a_supervisor_and_gen_server_module_upgrades_up_and_down(
    code_dir: CodeDir, tmp_path: Path
) -> None:
    p = code_dir.prefix
    top, chat = code_dir.name("top"), code_dir.name("chat")
    code_dir.write("top", TOP.format(p=p, chat=chat))
    code_dir.write("chat", CHAT.format(p=p, v="1", intensity=3))
    libs = {v: tmp_path / f"lib{v}" for v in ("1", "2")}
    for v, d in libs.items():
        d.mkdir()
        (d / f"{chat}.py").write_text(
            textwrap.dedent(CHAT.format(p=p, v=v, intensity=3 if v == "1" else 8))
        )
    async with Node() as node:
        node.code.set_path([code_dir.root])
        apps = AppController(node)
        apps.load(AppSpec("app", "1", (top, chat), (), f"{top}:start", {}))
        await apps.start("app")
        conns = [(await supervisor.start_child(f"{p}conns", [i]))[1] for i in range(3)]
        sup = node.whereis(f"{p}conns")
        assert sup is not None

        assert await _install(node, chat, "up", libs["2"]) == []
        state = node.processes[sup].sys.state
        assert state.intensity == 8  # the new init's flags, by the supervisor's code_change
        assert [c.pid for c in state.children[1:]] == conns  # its children kept
        for i, c in enumerate(conns):
            assert await gen_server.call(c, "x") == ("2", {"i": i, "v2": "1"})

        # down: the old code is loaded first, then the supervisor's code_change runs the
        # old module's init (intensity 3 again) and the workers' ("down", "1")
        assert await _install(node, chat, "down", libs["1"]) == []
        assert node.processes[sup].sys.state.intensity == 3
        for i, c in enumerate(conns):
            assert await gen_server.call(c, "x") == ("1", {"i": i})
        await apps.stop_all()


SUP = """
__vsn__ = "{v}"

def start():
    from relhandler.runtime import supervisor
    return supervisor.start_link(__name__, None, name="{p}sup")

def init(args):
    ids = {ids!r}
    return ("ok", ({{"strategy": "one_for_one", "intensity": {intensity}}},
                   [{{"id": i, "start": ("{w}", "start_link", [i])}} for i in ids]))
"""

WORKER = """
from relhandler.runtime import gen_server

def start_link(i):
    return gen_server.start_link(__name__, i)

def init(i):
    return ("ok", {"i": i, "log": []})

def handle_call(req, from_, state):
    return ("reply", state, state)

def handle_cast(msg, state):
    return ("noreply", state)

async def code_change(old_vsn, state, extra):
    state["log"].append("migrated")  # in place, nested
    state["v2"] = True
    if state["i"] == "b":
        raise RuntimeError("cannot migrate b")
    return ("ok", state)

def boom():
    raise RuntimeError("boom")
"""


async def test_rollback_puts_supervisor_specs_children_and_states_back(
    code_dir: CodeDir, tmp_path: Path
) -> None:
    p = code_dir.prefix
    sup, w = code_dir.name("sup"), code_dir.name("w")
    code_dir.write("w", WORKER)
    code_dir.write("sup", SUP.format(p=p, w=w, v="1", ids=["a", "b"], intensity=1))
    lib = tmp_path / "lib2"
    lib.mkdir()
    (lib / f"{sup}.py").write_text(
        textwrap.dedent(SUP.format(p=p, w=w, v="2", ids=["a", "b", "c"], intensity=9))
    )
    (lib / f"{w}.py").write_text(textwrap.dedent(WORKER))
    script = [
        ["load_object_code", "app", "2", [sup, w]],
        "point_of_no_return",
        ["suspend", [sup]],
        ["load", sup, "brutal_purge", "brutal_purge"],
        ["code_change", "up", [[sup, []]]],
        ["resume", [sup]],
        ["apply", "supervisor", "restart_child", [f"{p}sup", "c"]],  # starts c
        ["apply", "supervisor", "terminate_child", [f"{p}sup", "a"]],  # stops a
        ["suspend", [w]],
        ["load", w, "brutal_purge", "brutal_purge"],
        ["code_change", "up", [[w, []]]],  # mutates in place, fails on b
        ["resume", [w]],
    ]
    async with Node() as node:
        node.code.set_path([code_dir.root])
        apps = AppController(node)
        apps.load(AppSpec("app", "1", (sup, w), (), f"{sup}:start", {}))
        await apps.start("app")
        top = node.whereis(f"{p}sup")
        assert top is not None
        kids = {c.id: c.pid for c in await supervisor.which_children(top)}
        # in process, a call hands back the live state itself: keep a copy to compare with
        states = {i: copy.deepcopy(await gen_server.call(pid, "s")) for i, pid in kids.items()}  # type: ignore[arg-type]
        inst = Installer(
            node,
            script,
            mode="up",
            lib_dir=lambda app, vsn: lib,
            new_path=list(node.code.path),
            new_specs=[],
            new_env={},
            options=InstallOptions(),
        )
        inst.check()
        # the preflight awaits the async code_change on a copy: b's failure is foreseen
        failures = await inst.preflight()
        assert [(f["module"], f["error"]) for f in failures] == [
            (w, "RuntimeError: cannot migrate b")
        ]
        with pytest.raises(InstallError, match="cannot migrate b"):
            await inst.execute()
        state = node.processes[top].sys.state
        assert state.intensity == 1
        after = {c.id: c.pid for c in await supervisor.which_children(top)}
        assert list(after) == ["a", "b"]  # c's spec is gone, and c with it
        assert after["b"] == kids["b"]  # untouched child: same pid
        assert after["a"] is not None and after["a"] in node.processes  # stopped: restarted
        assert [p for p in node.processes.values() if p.initial_call == f"{w}:init"] and all(
            p.pid in after.values()
            for p in node.processes.values()
            if p.initial_call == f"{w}:init"
        )
        assert await gen_server.call(after["b"], "s") == states["b"]  # the failing one too
        assert await gen_server.call(after["a"], "s") == states["a"]
        await apps.stop_all()
