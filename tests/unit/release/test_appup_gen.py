"""``appup generate`` on pairs of application versions (release/appup_gen.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from relhandler.release.appup_gen import generate_appup
from relhandler.release.model import AppSpec

APP = """
from relhandler.runtime import supervisor

async def start():
    return await supervisor.start_link("a.sup", None, name="a_sup")
"""

SUP = """
def init(args):
    flags = {{"strategy": "one_for_one", "intensity": {intensity}, "period": 10}}
    children = [{children}]
    return ("ok", (flags, children))
"""

CHILD = '{{"id": "{c}", "start": ("a.{c}", "start_link", []), "modules": ["a.{c}"]}}'

WORKER = """
def init(args): return ("ok", {})
def code_change(old_vsn, state, extra): return ("ok", state)
"""

# the sample app's chat.py pattern: one module is the connection supervisor and the
# connection GenServer; nothing in the app names it "supervisor" but its init
CHAT = """
def init(args):
    if args == "conn_sup":
        return ("ok", ({{"strategy": "simple_one_for_one"}},
                       [{{"id": "conn", "start": ("a.chat", "start_conn", [])}}]))
    return ("ok", {{"lines": 0}})

def reply(line): return "{prefix}" + line

def code_change(old_vsn, state, extra): return ("ok", state)
"""


def _lib(root: Path, files: dict[str, str]) -> Path:
    for rel, src in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src))
    return root


def _version(
    tmp: Path, vsn: str, children: list[str], intensity: int, *, app: str = APP, prefix: str = ""
) -> tuple[AppSpec, Path]:
    files = {
        "a/__init__.py": "",
        "a/app.py": app,
        "a/sup.py": SUP.format(
            intensity=intensity, children=", ".join(CHILD.format(c=c) for c in children)
        ),
        "a/chat.py": CHAT.format(prefix=prefix),
    }
    files.update({f"a/{c}.py": WORKER for c in children})
    mods = ("a", "a.app", "a.chat", "a.sup", *(f"a.{c}" for c in children))
    return AppSpec("a", vsn, mods, (), "a.app:start", {}), _lib(tmp / vsn, files)


def _gen(tmp: Path, old: list[str], new: list[str], **kw: Any) -> dict[str, Any]:
    o, ol = _version(tmp, "1.0.0", old, 5, **kw)
    n, nl = _version(tmp, "2.0.0", new, 7, **kw)
    return generate_appup(o, ol, n, nl)


def test_a_supervisor_gaining_a_child_gets_update_and_restart_child_mirrored(
    tmp_path: Path,
) -> None:
    doc = _gen(tmp_path, ["w1"], ["w1", "w2"])
    assert doc["up"][0]["instructions"] == [
        ["add_module", "a.w2"],
        ["update", "a.sup", "supervisor"],
        ["apply", "supervisor", "restart_child", ["a_sup", "w2"]],
    ]
    assert doc["down"][0]["instructions"] == [
        ["apply", "supervisor", "terminate_child", ["a_sup", "w2"]],
        ["apply", "supervisor", "delete_child", ["a_sup", "w2"]],
        ["update", "a.sup", "supervisor"],
        ["delete_module", "a.w2"],
    ]


def test_a_supervisor_losing_a_child_terminates_and_deletes_it_first(tmp_path: Path) -> None:
    doc = _gen(tmp_path, ["w1", "w2"], ["w1"])
    assert doc["up"][0]["instructions"] == [
        ["apply", "supervisor", "terminate_child", ["a_sup", "w2"]],
        ["apply", "supervisor", "delete_child", ["a_sup", "w2"]],
        ["update", "a.sup", "supervisor"],
        ["delete_module", "a.w2"],
    ]
    assert doc["down"][0]["instructions"] == [
        ["add_module", "a.w2"],
        ["update", "a.sup", "supervisor"],
        ["apply", "supervisor", "restart_child", ["a_sup", "w2"]],
    ]


def test_an_unregistered_supervisor_is_named_by_its_module(tmp_path: Path) -> None:
    app = APP.replace(', name="a_sup"', "")
    doc = _gen(tmp_path, ["w1"], ["w1", "w2"], app=app)
    assert ["apply", "supervisor", "restart_child", ["a.sup", "w2"]] in doc["up"][0]["instructions"]


def test_supervisor_recognised_by_its_init_alone(tmp_path: Path) -> None:
    # nothing in the app starts it (say the start is computed): the init's shape decides
    app = APP.replace('"a.sup"', "MOD").replace("async def", 'MOD = "a." + "sup"\nasync def')
    doc = _gen(tmp_path, ["w1"], ["w1"], app=app)
    assert ["update", "a.sup", "supervisor"] in doc["up"][0]["instructions"]


@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_module_that_is_supervisor_and_gen_server_is_a_supervisor(
    tmp_path: Path, direction: str
) -> None:
    o, ol = _version(tmp_path, "1.0.0", ["w1"], 5, prefix="echo: ")
    n, nl = _version(tmp_path, "2.0.0", ["w1"], 5, prefix="[v2] ")
    doc = generate_appup(o, ol, n, nl)
    assert doc[direction][0]["instructions"] == [["update", "a.chat", "supervisor"]]


def test_a_changed_gen_server_is_still_an_advanced_update(tmp_path: Path) -> None:
    o, ol = _version(tmp_path, "1.0.0", ["w1"], 5)
    n, nl = _version(tmp_path, "2.0.0", ["w1"], 5)
    (nl / "a" / "w1.py").write_text(WORKER + "\n# changed\n")
    doc = generate_appup(o, ol, n, nl)
    assert doc["up"][0]["instructions"] == [["update", "a.w1", {"change": "advanced", "extra": []}]]


def test_library_appup_loads_changed_modules_with_dep_mods_from_imports(tmp_path: Path) -> None:
    from relhandler.release.appup_gen import library_appup

    old_lib, new_lib = tmp_path / "old", tmp_path / "new"
    for lib, v in ((old_lib, "1"), (new_lib, "2")):
        (lib / "lib3p").mkdir(parents=True)
        (lib / "lib3p/__init__.py").write_text("from lib3p.core import VERSION\n")
        (lib / "lib3p/core.py").write_text(f"VERSION = {v!r}\n")
        (lib / "lib3p/same.py").write_text("def code_change(*a):\n    pass\n")
    (new_lib / "lib3p/extra.py").write_text("from . import core\n")
    old = AppSpec("lib3p", "1.0", ("lib3p", "lib3p.core", "lib3p.same"))
    new = AppSpec("lib3p", "2.0", ("lib3p", "lib3p.core", "lib3p.extra", "lib3p.same"))
    doc = library_appup(old, old_lib, new, new_lib)
    assert doc["up"] == [
        {
            "from": "1.0",
            "instructions": [
                ["add_module", "lib3p.extra", {"dep_mods": ["lib3p.core"]}],
                ["load_module", "lib3p.core"],
            ],
        }
    ]
    assert doc["down"][0]["instructions"] == [
        ["load_module", "lib3p.core"],
        ["delete_module", "lib3p.extra"],
    ]


def test_library_appup_loads_what_a_module_imports_first_on_the_way_down_too(
    tmp_path: Path,
) -> None:
    """The translator loads a module before its dep_mods on a downgrade (OTP's order): the
    down section names the importers instead, so the relup loads core before the package
    that imports a name only the old core has."""
    from relhandler.release.appup_gen import library_appup
    from relhandler.release.relup import translate_scripts

    old_lib, new_lib = tmp_path / "old", tmp_path / "new"
    for lib, v in ((old_lib, "1"), (new_lib, "2")):
        (lib / "lib3p").mkdir(parents=True)
        (lib / "lib3p/__init__.py").write_text(f"from lib3p.core import V{v}\n")
        (lib / "lib3p/core.py").write_text(f"V{v} = True\n")
    mods = ("lib3p", "lib3p.core")
    old, new = AppSpec("lib3p", "1.0", mods), AppSpec("lib3p", "2.0", mods)
    doc = library_appup(old, old_lib, new, new_lib)
    apps, pre = [("lib3p", "2.0", mods)], [("lib3p", "1.0", mods)]

    def loads(mode: str, script: list[Any], to: Any, frm: Any) -> list[str]:
        out = translate_scripts(mode, [script], to, frm)  # type: ignore[arg-type]
        return [i[1] for i in out if i[0] == "load"]

    assert loads("up", doc["up"][0]["instructions"], apps, pre) == ["lib3p.core", "lib3p"]
    assert loads("down", doc["down"][0]["instructions"], pre, apps) == ["lib3p.core", "lib3p"]
