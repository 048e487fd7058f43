"""The installer upgrades a supervisor the OTP way, in both directions (issue 13).

In-process node, the installer driven directly with low-level relup terms: a module that
is both a supervisor's and its workers' callback module (the sample app's chat.py
pattern) passes the preflight and the install up and down; the supervisor's own
code_change re-runs init (the new module's up, the old one's down, after the load).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

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
