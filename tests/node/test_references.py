"""One test per row of the reference table in docs/references.md (issue 14.2): how each way
managed code refers to code behaves when the module it refers to loads a new version."""

from __future__ import annotations

import pickle
import sys
import textwrap
from pathlib import Path

import pytest

from relhandler.runtime import Node, gen_server
from relhandler.runtime.code import RemoteFun

from .conftest import CodeDir

M = """
import {m}

__all__ = ["f", "star_only"]
VERSION = {v}


def f():
    return ("m", VERSION)


def star_only():
    return ("star", VERSION)


def local():
    return f()


def qualified():
    return {m}.f()


class Thing:
    def where(self):
        return ("thing", VERSION)


def make():
    return Thing()


def closure():
    def inner():
        return ("closure", VERSION, f(), {m}.f())

    return inner
"""

N = """
import importlib

import {m}
import {pkg}.sub
from {m} import VERSION as M_VERSION, Thing, f
from {m} import f as renamed
from {m} import f as rebound
from {pkg} import sub as sub_alias

rebound = lambda: "mine"  # the importer's own binding: never touched
dynamic = importlib.import_module("{m}")
N_VERSION = {v}


def via_module():
    return {m}.f()


def via_from():
    return f()


def via_function_import():
    import {m} as mm
    from {m} import f as ff

    return (mm.f(), ff())


def via_package():
    return ({pkg}.sub.g(), sub_alias.g())
"""

STAR = """
from {m} import *
"""

SUB = """
VERSION = {v}


def g():
    return ("sub", VERSION)
"""

HOLDER = """
from relhandler.runtime import gen_server


def init(state):
    return ("ok", state)


def handle_call(req, from_, state):
    if req == "call_all":
        return ("reply", {k: v() for k, v in state["funs"].items()}, state)
    return ("reply", state, state)


def handle_cast(msg, state):
    return ("noreply", state)
"""


class Mods:
    def __init__(self, code_dir: CodeDir) -> None:
        self.d = code_dir
        self.m, self.n, self.star = (code_dir.name(x) for x in ("m", "n", "star"))
        self.pkg, self.holder = code_dir.name("pkg"), code_dir.name("holder")
        pkg = code_dir.root / self.pkg
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        self.sub_file: Path = pkg / "sub.py"

    def write_m(self, v: int) -> None:
        self.d.write("m", M.format(m=self.m, v=v))

    def write_sub(self, v: int) -> None:
        self.sub_file.write_text(textwrap.dedent(SUB.format(v=v)))

    def write_all(self) -> None:
        self.write_m(1)
        self.write_sub(1)
        self.d.write("n", N.format(m=self.m, pkg=self.pkg, v=1))
        self.d.write("star", STAR.format(m=self.m))
        self.d.write("holder", HOLDER)


@pytest.fixture
def mods(code_dir: CodeDir) -> Mods:
    m = Mods(code_dir)
    m.write_all()
    return m


async def test_import_module_then_qualified_call_reaches_current(mods: Mods) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        n = node.code.current(mods.n)
        assert n.via_module() == ("m", 1)
        mods.write_m(2)
        node.code.load(mods.m)
        assert n.via_module() == ("m", 2)
        # also a module bound by importlib at module level, and m's own `import m`
        assert n.dynamic is sys.modules[mods.m]
        assert node.code.current(mods.m).qualified() == ("m", 2)


async def test_from_import_of_a_function_follows_the_current_version(mods: Mods) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        n1 = node.code.current(mods.n)
        assert n1.via_from() == ("m", 1) and n1.renamed() == ("m", 1)
        mods.write_m(2)
        node.code.load(mods.m)
        m2 = node.code.current(mods.m)
        assert n1.f is m2.f and n1.renamed is m2.f and n1.via_from() == ("m", 2)
        assert n1.rebound() == "mine"  # rebound by the importer: left alone
        # the importer's old version follows too (Erlang: old code's remote calls)
        node.code.load(mods.n)
        assert node.code.old_vsn(mods.n) is not None
        node.code.purge(mods.m)
        mods.write_m(3)
        node.code.load(mods.m)
        assert n1.via_from() == ("m", 3) and node.code.current(mods.n).via_from() == ("m", 3)


async def test_from_import_of_a_class_or_value_follows_instances_keep_theirs(mods: Mods) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        n = node.code.current(mods.n)
        old_thing = n.Thing()
        mods.write_m(2)
        node.code.load(mods.m)
        m2 = node.code.current(mods.m)
        assert n.Thing is m2.Thing and n.M_VERSION == 2
        assert n.Thing().where() == ("thing", 2)
        assert old_thing.where() == ("thing", 1)  # the instance keeps its class's version
        assert not isinstance(old_thing, m2.Thing)


async def test_imports_inside_functions_reach_current(mods: Mods) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        n = node.code.current(mods.n)
        mods.write_m(2)
        node.code.load(mods.m)
        assert n.via_function_import() == (("m", 2), ("m", 2))


async def test_package_submodule_through_its_package_reaches_current(mods: Mods) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        n = node.code.current(mods.n)
        assert n.via_package() == (("sub", 1), ("sub", 1))
        mods.write_sub(2)
        node.code.load(f"{mods.pkg}.sub")
        assert n.via_package() == (("sub", 2), ("sub", 2))
        assert sys.modules[mods.pkg].sub is sys.modules[f"{mods.pkg}.sub"]


async def test_star_import_is_bound_once(mods: Mods) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        star = node.code.current(mods.star)
        mods.write_m(2)
        node.code.load(mods.m)
        assert star.star_only() == ("star", 1)  # `from m import *`: names bound at import


async def test_local_call_stays_in_its_version(mods: Mods) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        m1 = node.code.current(mods.m)
        mods.write_m(2)
        node.code.load(mods.m)
        assert m1.local() == ("m", 1) and m1.qualified() == ("m", 2)


async def test_closures_and_bound_methods_keep_their_version(mods: Mods) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        m1 = node.code.current(mods.m)
        inner = m1.closure()
        method = m1.make().where
        mods.write_m(2)
        node.code.load(mods.m)
        # the closure's own code and its bare calls stay in v1; its qualified call is v2
        assert inner() == ("closure", 1, ("m", 1), ("m", 2))
        assert method() == ("thing", 1)


async def test_functions_stored_in_a_state_keep_their_version_remote_fun_follows(
    mods: Mods,
) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        m1 = node.code.current(mods.m)
        funs = {"local_fun": m1.f, "remote_fun": RemoteFun(mods.m, "f")}
        pid = await gen_server.start(mods.holder, {"funs": funs})
        assert await gen_server.call(pid, "call_all") == {
            "local_fun": ("m", 1),
            "remote_fun": ("m", 1),
        }
        mods.write_m(2)
        node.code.load(mods.m)
        assert await gen_server.call(pid, "call_all") == {
            "local_fun": ("m", 1),
            "remote_fun": ("m", 2),
        }
        assert pickle.loads(pickle.dumps(funs["remote_fun"]))() == ("m", 2)


async def test_purge_with_old_instances_in_a_state_what_happens(mods: Mods) -> None:
    # documented: a state holding old-version instances or functions does not make its
    # process an old-code user; after the purge those objects keep working on the old
    # code, which stays alive as long as they do, and they no longer pickle
    async with Node() as node:
        node.code.set_path([mods.d.root])
        m1 = node.code.current(mods.m)
        thing = m1.make()
        pid = await gen_server.start(mods.holder, {"funs": {"where": thing.where}, "t": thing})
        mods.write_m(2)
        node.code.load(mods.m)
        assert node.code.old_code_users(mods.m) == []
        assert node.code.purge(mods.m) is False  # nobody killed
        assert node.processes[pid].alive
        assert await gen_server.call(pid, "call_all") == {"where": ("thing", 1)}
        with pytest.raises(pickle.PicklingError):
            pickle.dumps(thing)
        assert pickle.loads(pickle.dumps(node.code.current(mods.m).make())).where() == (
            "thing",
            2,
        )


async def test_code_outside_the_release_holding_a_module_is_pinned_live_handle_follows(
    mods: Mods,
) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        node.code.load(mods.m)
        held = sys.modules[mods.m]
        handle = node.code.live(mods.m)
        mods.write_m(2)
        node.code.load(mods.m)
        assert held.f() == ("m", 1) and handle.f() == ("m", 2)
        assert sys.modules[mods.m].f() == ("m", 2)


async def test_rollback_puts_followed_names_back(mods: Mods) -> None:
    async with Node() as node:
        node.code.set_path([mods.d.root])
        n = node.code.current(mods.n)
        snap = node.code.snapshot()
        mods.write_m(2)
        node.code.load(mods.m)
        assert n.via_from() == ("m", 2)
        node.code.restore(snap)
        assert n.via_from() == ("m", 1) and n.via_module() == ("m", 1)
        assert sys.modules[mods.m] is node.code.current(mods.m)


async def test_from_import_of_a_module_from_itself_stays_local(code_dir: CodeDir) -> None:
    me = code_dir.name("selfimp")
    src = """
import {me}
VERSION = {v}


def f():
    return VERSION


from {me} import f as alias  # noqa: E402


def via_alias():
    return alias()


def via_module():
    return {me}.f()
"""
    code_dir.write("selfimp", src.format(me=me, v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m1 = node.code.current(me)
        code_dir.write("selfimp", src.format(me=me, v=2))
        node.code.load(me)
        assert m1.via_alias() == 1 and m1.via_module() == 2


async def test_a_reexported_function_follows_through_the_reexporting_module(
    code_dir: CodeDir,
) -> None:
    k, m, n = (code_dir.name(x) for x in ("rk", "rm", "rn"))
    code_dir.write("rk", "def g():\n    return 1\n")
    code_dir.write("rm", f"from {k} import g\n")
    code_dir.write("rn", f"from {m} import g\n")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        nm = node.code.current(n)
        assert nm.g() == 1
        code_dir.write("rk", "def g():\n    return 2\n")
        node.code.load(k)
        assert node.code.current(m).g() == 2 and nm.g() == 2


async def test_from_import_of_a_name_the_new_version_removed_is_unbound(
    code_dir: CodeDir,
) -> None:
    # Erlang: an -imported function the module no longer exports is `undef` at the call;
    # the importer's name must not keep the old version (run purged code) forever
    lib, user = code_dir.name("lib"), code_dir.name("user")
    code_dir.write("lib", "def f():\n    return 'f1'\n\ndef g():\n    return 'g1'\n")
    code_dir.write(
        "user",
        f"from {lib} import f, g\n\ndef call_f():\n    return f()\n\ndef call_g():\n"
        "    return g()\n",
    )
    async with Node() as node:
        node.code.set_path([code_dir.root])
        u = node.code.current(user)
        assert (u.call_f(), u.call_g()) == ("f1", "g1")
        code_dir.write("lib", "def f():\n    return 'f2'\n")
        node.code.load(lib)
        assert u.call_f() == "f2"
        with pytest.raises(NameError, match="'g'"):
            u.call_g()
        snap = node.code.snapshot()
        node.code.purge(lib)
        code_dir.write("lib", "def f():\n    return 'f3'\n\ndef g():\n    return 'g3'\n")
        node.code.load(lib)
        assert (u.call_f(), u.call_g()) == ("f3", "g3")  # defined again: followed again
        node.code.restore(snap)
        assert u.call_f() == "f2" and "g" not in vars(u)


async def test_code_built_from_a_class_at_load_holds_that_class_until_it_loads_again(
    code_dir: CodeDir,
) -> None:
    # docs/references.md, "What a module built from another module's classes"
    item, b = code_dir.name("item"), code_dir.name("builder")
    source = (
        "import pydantic\n\nclass Item(pydantic.BaseModel):\n    name: str\n{extra}\n"
        "def tag():\n    return {v}\n"
    )
    code_dir.write("item", source.format(extra="", v=1))
    code_dir.write(
        "builder",
        f"""
        import functools
        import pydantic
        import {item} as m

        class Cart(pydantic.BaseModel):
            items: list[m.Item]

        class Special(m.Item):
            pass

        @functools.singledispatch
        def kind(x):
            return "other"

        @kind.register
        def _(x: m.Item):
            return "item"

        TABLE = {{"tag": m.tag}}  # a dispatch table of another module's functions

        def seen(x):
            return (Cart(items=[x]).items[0].name, kind(x), issubclass(Special, m.Item))
        """,
    )
    async with Node() as node:
        node.code.set_path([code_dir.root])
        builder = node.code.current(b)
        assert builder.seen(node.code.current(item).Item(name="a")) == ("a", "item", True)
        code_dir.write("item", source.format(extra="    qty: int = 1\n", v=2))
        node.code.load(item)
        assert builder.TABLE["tag"]() == 1
        new = node.code.current(item).Item(name="b")
        import pydantic

        with pytest.raises(pydantic.ValidationError, match="instance of Item"):
            builder.seen(new)
        assert (builder.kind(new), issubclass(builder.Special, type(new))) == ("other", False)
        node.code.load(b)  # the builder loads after it: built against v2
        assert node.code.current(b).seen(new) == ("b", "item", True)
        assert node.code.current(b).TABLE["tag"]() == 2
