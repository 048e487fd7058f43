"""A managed module is an ordinary module to every library that looks at it (issue 14.1)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from relhandler.runtime import Node
from tests.fixtures.modern import MODERN, MODERN_EAGER, import_normally, probe

from .conftest import CodeDir


@pytest.mark.parametrize("source", [MODERN, MODERN_EAGER], ids=["future", "eager"])
async def test_managed_module_behaves_as_imported_normally(
    code_dir: CodeDir, caplog: pytest.LogCaptureFixture, source: str
) -> None:
    src1 = source.format(vsn="1", order_extra="")
    src2 = source.format(vsn="2", order_extra="\n    note: str = ''")
    plain = code_dir.name("plain")
    path = code_dir.write("plain", src1)
    try:
        import_normally(plain, str(path))
        expected = probe(plain)
    finally:
        sys.modules.pop(plain, None)
    me = code_dir.name("modern")
    code_dir.write("modern", src1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        node.code.load(me)
        assert sys.modules[me] is node.code.current(me)
        got = probe(me)
        assert got == expected
        with caplog.at_level(logging.WARNING, logger=me):
            sys.modules[me].hello()
        assert [r.name for r in caplog.records if r.getMessage() == f"hello from {me}"] == [me]
        # the next version is the ordinary module now; the old one keeps its own classes
        v1 = node.code.current(me)
        code_dir.write("modern", src2)
        node.code.load(me)
        assert sys.modules[me] is node.code.current(me) is not v1
        got2 = probe(me)
        assert got2.pop("pydantic") == {**expected["pydantic"], "note": ""}
        assert got2.pop("order_hints") == ["customer", "items", "note"]
        assert got2 == {k: v for k, v in expected.items() if k not in ("pydantic", "order_hints")}
        assert v1.Order.model_validate({"items": []}).model_dump() == {
            "items": [],
            "customer": None,
        }
        # and back (a downgrade loads the earlier source again)
        node.code.purge(me)
        code_dir.write("modern", src1)
        node.code.load(me)
        assert probe(me) == expected


async def test_dataclass_classvar_under_future_annotations_loads(code_dir: CodeDir) -> None:
    # the failure the issue reported: "mutable default ... for field" at load
    me = code_dir.name("dc")
    code_dir.write(
        "dc",
        """
        from __future__ import annotations
        import typing
        from dataclasses import dataclass, field
        from typing import ClassVar

        @dataclass
        class Registry:
            ALL: ClassVar[list[str]] = []
            names: list[str] = field(default_factory=list)

        def hints():
            return typing.get_type_hints(Registry)
        """,
    )
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = node.code.current(me)
        assert [f for f in m.Registry.__dataclass_fields__ if f != "ALL"] == ["names"]
        assert m.Registry.__dataclass_fields__["ALL"]._field_type.name == "_FIELD_CLASSVAR"
        assert set(m.hints()) == {"ALL", "names"}


async def test_autoloaded_package_has_an_ordinary_spec(code_dir: CodeDir) -> None:
    import importlib.util
    import inspect

    pkg = code_dir.name("pkgspec")
    d = code_dir.root / pkg
    d.mkdir()
    (d / "__init__.py").write_text("from . import sub\n")
    (d / "sub.py").write_text("class K:\n    pass\n")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        mod = __import__(pkg)
        assert mod is sys.modules[pkg] is node.code.current(pkg)
        assert mod.__spec__.submodule_search_locations == [str(d)]
        assert mod.__path__ == [str(d)]
        assert importlib.util.find_spec(f"{pkg}.sub") is sys.modules[f"{pkg}.sub"].__spec__
        assert inspect.getsource(mod.sub.K) == "class K:\n    pass\n"
        assert mod.sub is node.code.current(f"{pkg}.sub")


PKG_INIT = """
import importlib.resources
import pkgutil

GREETING = importlib.resources.files(__name__).joinpath("greeting.txt").read_text()


def read_both():
    return (
        importlib.resources.files(__name__).joinpath("greeting.txt").read_text(),
        pkgutil.get_data(__name__, "greeting.txt"),
        __spec__.loader.get_source(__name__).splitlines()[1],
    )
"""


def _pkg(d: Path, name: str, greeting: str) -> Path:
    (d / name).mkdir(parents=True)
    (d / name / "__init__.py").write_text(PKG_INIT)
    (d / name / "greeting.txt").write_text(greeting)
    return d / name / "__init__.py"


async def test_package_data_reads_as_for_a_normal_import(code_dir: CodeDir, tmp_path: Path) -> None:
    # importlib.resources and pkgutil.get_data go through the module's spec and loader
    import importlib.resources
    import importlib.util

    plain = code_dir.name("plainpkg")
    init = _pkg(tmp_path / "normal", plain, "hi")
    spec = importlib.util.spec_from_file_location(
        plain, init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None and spec.loader is not None
    m = importlib.util.module_from_spec(spec)
    sys.modules[plain] = m
    try:
        spec.loader.exec_module(m)
        expected = (m.GREETING, m.read_both())
    finally:
        sys.modules.pop(plain, None)
    assert expected == ("hi", ("hi", b"hi", "import importlib.resources"))

    me = code_dir.name("datapkg")
    _pkg(code_dir.root, me, "hi")
    v2 = _pkg(tmp_path / "v2", me, "hello")  # the next release's copy, with new data
    async with Node() as node:
        node.code.set_path([code_dir.root])
        mod = __import__(me)  # autoloaded: the import system's own spec handling
        assert (mod.GREETING, mod.read_both()) == expected
        assert mod.__spec__.loader is mod.__loader__
        node.code.load(me, v2)
        new = sys.modules[me]
        assert (new.GREETING, new.read_both()) == ("hello", ("hello", b"hello", expected[1][2]))
        # as for a normal module, files(__name__) looks the name up: the current version's
        # data, also from old code; the old version's own spec still names its own file
        assert mod.read_both() == new.read_both()
        assert importlib.resources.files(mod).joinpath("greeting.txt").read_text() == "hi"
        # importlib.reload loads nothing (the code server does), says so, and leaves the
        # version's own spec and loader in place
        with pytest.warns(UserWarning, match=f"use `relhandler reload {me}`"):
            assert importlib.reload(new) is new
        assert new.__spec__.loader is new.__loader__ and new.read_both()[0] == "hello"
        assert new.__file__ == str(v2) and new.GREETING == "hello"


SERVER_PKG = """
import importlib.resources

from relhandler.runtime import gen_server

GREETING = importlib.resources.files(__name__).joinpath("greeting.txt").read_text()


def init(args):
    return ("ok", {"n": 0})


def handle_call(req, from_, state):
    return ("reply", (GREETING, __spec__.name), state)


def handle_cast(msg, state):
    return ("noreply", state)
"""


async def test_new_code_that_reads_package_data_passes_the_preflight(code_dir: CodeDir) -> None:
    # the preflight executes the new code in a scratch module: it has a spec too
    from relhandler.handler.reload import reload_module
    from relhandler.runtime import gen_server

    me = code_dir.name("srvpkg")
    d = code_dir.root / me
    d.mkdir()
    (d / "__init__.py").write_text(SERVER_PKG)
    (d / "greeting.txt").write_text("hi")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, None)
        assert await gen_server.call(pid, "x") == ("hi", me)
        (d / "__init__.py").write_text(
            SERVER_PKG + "\n\ndef code_change(old, state, extra):\n    return ('ok', state)\n"
        )
        (d / "greeting.txt").write_text("hello")
        r = await reload_module(node, me)
        assert r.migrated == (pid,)
        assert await gen_server.call(pid, "x") == ("hello", me)


GRID_SERVER = """
from relhandler.runtime import gen_server
from relhandler.runtime.statecopy import register_copier


class Grid:
    def __init__(self, cells):
        self.cells = cells

{register}

def init(args):
    return ("ok", {{"grid": Grid([1]), "buf": bytearray(b"v1")}})


def handle_call(req, from_, state):
    return ("reply", (state["grid"].cells, bytes(state["buf"])), state)


def handle_cast(msg, state):
    return ("noreply", state)
{code_change}
"""

GRID_CHANGE = """
def code_change(old, state, extra):
    state["grid"].cells.append("v2")  # in place: on the preflight's copy, then for real
    state["buf"].extend(b"+")
    return ("ok", state)
"""


@pytest.mark.parametrize("registered", [False, True])
async def test_the_preflight_copies_a_registered_class_and_shares_a_plain_one(
    code_dir: CodeDir, registered: bool
) -> None:
    # docs/runtime.md, "What the preflight copies": a code_change that mutates a shared
    # object in place mutates the live one in the preflight; a registered copier copies it
    from relhandler.handler.reload import reload_module
    from relhandler.runtime import gen_server

    reg = "register_copier(Grid, lambda g, copy: Grid(copy(g.cells)))" if registered else ""
    me = code_dir.name("grid")
    code_dir.write("grid", GRID_SERVER.format(register=reg, code_change=""))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me, None)
        code_dir.write("grid", GRID_SERVER.format(register=reg, code_change=GRID_CHANGE))
        await reload_module(node, me)
        cells = [1, "v2"] if registered else [1, "v2", "v2"]
        assert await gen_server.call(pid, "x") == (cells, b"v1+")  # the bytearray: copied


PICKLED = """
import dataclasses
import time

from relhandler.runtime import gen_server


@dataclasses.dataclass
class Thing:
    n: int = 0

{slow}

def init(args):
    return ("ok", 0)


def handle_call(req, from_, state):
    return ("reply", state, state)


def handle_cast(msg, state):
    return ("noreply", state)
{code_change}
"""


async def test_live_code_sees_the_current_module_while_the_preflight_runs_new_code(
    code_dir: CodeDir,
) -> None:
    # the preflight executes the new code in a scratch module, which sits in sys.modules
    # while it executes: live code pickling a current instance meanwhile failed ("not the
    # same object as ...Thing")
    import asyncio
    import pickle

    from relhandler.handler.reload import reload_module
    from relhandler.runtime import gen_server

    me = code_dir.name("pickled")
    code_dir.write("pickled", PICKLED.format(slow="", code_change=""))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        await gen_server.start(me, None)
        errors: list[str] = []
        done = False
        rounds = 0

        async def pickler() -> None:
            nonlocal rounds
            while not done:
                try:
                    pickle.dumps(node.code.current(me).Thing())
                except pickle.PicklingError as e:
                    errors.append(str(e))
                rounds += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(pickler())
        code_dir.write(
            "pickled",
            PICKLED.format(
                slow="time.sleep(0.05)  # a slow top level: the window the race had",
                code_change="\ndef code_change(old, state, extra):\n    return ('ok', state)\n",
            ),
        )
        await reload_module(node, me)
        done = True
        await task
        assert rounds > 0 and errors == []
