"""Code server: two versions, qualified vs local calls, purge rules (issue 3, cases.md D)."""

from __future__ import annotations

import asyncio

import pytest

from relhandler.errors import ModuleLoadError, NotPurgedError
from relhandler.runtime import Node, gen_server, receive, supervisor

from .conftest import CodeDir, until

GREETER_V1 = """
import {me}
from relhandler.runtime import receive

async def loop():
    msg = await receive()
    kind, name, reply_to = msg
    reply_to.append({me}.greet(name))
    return {me}.loop()

def greet(name):
    return f"Hello, {{name}}!"
"""
GREETER_V2 = GREETER_V1.replace('f"Hello, {{name}}!"', 'f"Howdy, {{name}}! Welcome..."')


async def test_greeter_switches_version_on_qualified_call_same_pid(code_dir: CodeDir) -> None:
    me = code_dir.name("greeter")
    code_dir.write("greeter", GREETER_V1.format(me=me))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        mod = node.code.live(me)
        pid = node.spawn(mod.loop)
        node.register("greeter", pid)
        out: list[str] = []
        node.send("greeter", ("greet", "Alice", out))
        await until(lambda: len(out) == 1)
        assert out == ["Hello, Alice!"]
        code_dir.write("greeter", GREETER_V2.format(me=me))
        node.code.load(me)
        node.send("greeter", ("greet", "Alice", out))
        await until(lambda: len(out) == 2)
        assert out[1] == "Howdy, Alice! Welcome..."
        assert node.whereis("greeter") == pid


COUNTER = """
import {me}
from relhandler.runtime import receive
VERSION = {v}

async def local_loop(n):
    msg = await receive()
    msg.append((VERSION, n))
    return local_loop(n + 1)

async def qualified_loop(n):
    msg = await receive()
    msg.append((VERSION, n))
    return {me}.qualified_loop(n + 1)

async def hold():
    await receive()
"""


async def test_local_call_stays_qualified_call_switches(code_dir: CodeDir) -> None:
    me = code_dir.name("counter")
    code_dir.write("counter", COUNTER.format(me=me, v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = node.code.live(me)
        local = node.spawn(m.local_loop, 0)
        qual = node.spawn(m.qualified_loop, 0)
        out_l: list[tuple[int, int]] = []
        out_q: list[tuple[int, int]] = []
        node.send(local, out_l)
        node.send(qual, out_q)
        await until(lambda: out_l and out_q)
        code_dir.write("counter", COUNTER.format(me=me, v=2))
        node.code.load(me)
        # the loop is parked in receive in v1 code; the next message is handled by v1,
        # after which the qualified loop continues in v2 and the local one stays in v1
        for _ in range(2):
            node.send(local, out_l)
            node.send(qual, out_q)
        await until(lambda: len(out_l) == 3 and len(out_q) == 3)
        assert out_l == [(1, 0), (1, 1), (1, 2)]
        assert out_q == [(1, 0), (1, 1), (2, 2)]
        assert node.code.check_process_code(local, me)
        assert not node.code.check_process_code(qual, me)


SUP = """
def init(args):
    mod = args
    return ("ok", ({"strategy": "one_for_one", "intensity": 5, "period": 10}, [
        {"id": "holder", "start": (mod, "start_link", []), "modules": [mod]}]))
"""
HOLDER = """
import asyncio
from relhandler.runtime import spawn_link, receive, register
VERSION = {v}

async def start_link():
    pid = spawn_link(run)
    return pid

async def run():
    register("holder_{tag}")
    await receive()
"""


async def test_third_version_not_purged_then_purge_kills_and_supervisor_restarts(
    code_dir: CodeDir,
) -> None:
    me = code_dir.name("holder")
    sup = code_dir.name("sup")
    code_dir.write("sup", SUP)
    code_dir.write("holder", HOLDER.format(v=1, tag=me))
    async with Node() as node:
        node.code.set_path([code_dir.root])

        async def boot() -> None:
            await supervisor.start_link(sup, me, name="top")
            await receive()

        node.spawn(boot)
        await until(lambda: node.whereis(f"holder_{me}") is not None)
        p1 = node.whereis(f"holder_{me}")
        code_dir.write("holder", HOLDER.format(v=2, tag=me))
        node.code.load(me)  # v1 → old, still used by p1
        assert node.code.check_process_code(p1, me)  # type: ignore[arg-type]
        code_dir.write("holder", HOLDER.format(v=3, tag=me))
        with pytest.raises(NotPurgedError, match="old version"):
            node.code.load(me)
        assert node.code.current(me).VERSION == 2  # nothing changed
        assert node.code.soft_purge(me) is False
        assert node.whereis(f"holder_{me}") == p1
        down: list[object] = []
        p1_proc = node.processes[p1]  # type: ignore[index]
        p1_proc.add_watcher(down.append)
        assert node.code.purge(me) is True
        node.code.load(me)  # now v3 loads
        await until(lambda: down == ["killed"])
        await until(lambda: node.whereis(f"holder_{me}") not in (None, p1))
        p2 = node.whereis(f"holder_{me}")
        assert p2 != p1
        assert node.code.current(me).VERSION == 3
        # the restarted process started on the current version: no old code to purge
        assert not node.code.check_process_code(p2, me)  # type: ignore[arg-type]


SERVER = """
import asyncio
__vsn__ = "{v}"

def init(args):
    return ("ok", {{"n": 0}})

async def handle_call(req, from_, state):
    if req == "block":
        await asyncio.sleep(3600)
    if req == "get":
        return ("reply", ("v{v}", state), state)
    return ("reply", "ok", state)

def handle_cast(msg, state):
    return ("noreply", {{**state, "n": state["n"] + 1, "log": state.get("log", []) + [msg]}})

def code_change(old_vsn, state, extra):
    if extra == "boom":
        raise ValueError("deliberate")
    return ("ok", {{**state, "migrated_from": old_vsn, "extra": extra}})
"""


async def test_check_process_code_blocked_in_old_code_vs_idle_gen_server(
    code_dir: CodeDir,
) -> None:
    me = code_dir.name("srv")
    code_dir.write("srv", SERVER.format(v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        idle = await gen_server.start(me)
        busy = await gen_server.start(me)
        task = asyncio.ensure_future(gen_server.call(busy, "block", timeout=None))
        await asyncio.sleep(0.01)
        code_dir.write("srv", SERVER.format(v=2))
        node.code.load(me)
        assert node.code.check_process_code(busy, me) is True
        assert node.code.check_process_code(idle, me) is False
        assert await gen_server.call(idle, "get") == ("v2", {"n": 0})
        task.cancel()


async def test_bad_module_changes_nothing(code_dir: CodeDir) -> None:
    me = code_dir.name("srv")
    code_dir.write("srv", SERVER.format(v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        pid = await gen_server.start(me)
        before = node.code.which(me)
        code_dir.write("srv", "def broken(:\n    pass\n")
        with pytest.raises(ModuleLoadError, match=r"srv\.py:1: syntax error"):
            node.code.load(me)
        code_dir.write("srv", "x = 1\nraise RuntimeError('at import')\n")
        with pytest.raises(ModuleLoadError, match=r"srv\.py:2: .*raised RuntimeError") as ei:
            node.code.load(me)
        assert "Traceback" in ei.value.details["traceback"]
        assert node.code.which(me) == before
        assert not node.code.has_old(me)
        assert await gen_server.call(pid, "get") == ("v1", {"n": 0})


async def test_cases_d_soft_purge_purge_delete(code_dir: CodeDir) -> None:
    me = code_dir.name("cm")
    code_dir.write("cm", COUNTER.format(me=me, v=1))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        node.code.load(me)
        assert node.code.purge(me) is False  # D3: no old code
        assert node.code.soft_purge(me) is True
        p = node.spawn(node.code.live(me).hold)
        await asyncio.sleep(0)
        node.code.load(me)
        assert node.code.delete(me) is False  # D4: old code present
        assert node.code.soft_purge(me) is False
        assert node.code.purge(me) is True
        await until(lambda: p not in node.processes)
        assert node.code.delete(me) is True
        assert not node.code.is_loaded(me)
        assert node.code.soft_purge(me) is True


async def test_a_submodule_loaded_first_loads_its_package_and_is_set_on_it(
    code_dir: CodeDir,
) -> None:
    """A supervisor starting ``pkg.sub`` before anything imported ``pkg`` (the code server
    loads it directly): ``import pkg.sub; pkg.sub.f()`` elsewhere still works, as when
    Python imports a submodule (its package first, then the attribute)."""
    pkg = code_dir.name("pk")
    (code_dir.root / pkg).mkdir()
    (code_dir.root / pkg / "__init__.py").write_text("")
    (code_dir.root / pkg / "visits.py").write_text("def visit():\n    return 1\n")
    (code_dir.root / pkg / "web.py").write_text(
        f"import {pkg}.visits\n\ndef home():\n    return {pkg}.visits.visit()\n"
    )
    async with Node() as node:
        node.code.set_path([code_dir.root])
        visits = node.code.current(f"{pkg}.visits")
        assert node.code.is_loaded(pkg)
        assert node.code.current(pkg).visits is visits
        assert node.code.current(f"{pkg}.web").home() == 1


async def test_restore_puts_the_package_attribute_back_to_the_restored_version(
    code_dir: CodeDir,
) -> None:
    """A rollback (``restore``) of ``pkg.g`` after a load: ``pkg.g`` on the package is the
    restored version again, so ``import pkg.g; pkg.g.f()`` inside it runs that version."""
    pkg = code_dir.name("pk")
    (code_dir.root / pkg).mkdir()
    (code_dir.root / pkg / "__init__.py").write_text("")
    src = f"import {pkg}.g\n\ndef greet():\n    return {pkg}.g.greeting()\n\n"
    (code_dir.root / pkg / "g.py").write_text(src + "def greeting():\n    return 'v2'\n")
    v1 = code_dir.root / "g_v1.py"
    v1.write_text(src + "def greeting():\n    return 'v1'\n")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        assert node.code.current(f"{pkg}.g").greet() == "v2"
        snap = node.code.snapshot()
        node.code.load(f"{pkg}.g", v1)
        assert node.code.current(f"{pkg}.g").greet() == "v1"
        node.code.restore(snap)
        assert node.code.current(f"{pkg}.g").greet() == "v2"
        assert node.code.current(pkg).g is node.code.current(f"{pkg}.g")


async def test_a_new_version_of_a_package_keeps_its_loaded_submodules_as_attributes(
    code_dir: CodeDir,
) -> None:
    """A package upgraded after its submodule (a hot dependency's relup loads what a module
    imports first): ``pkg.sub`` is still an attribute of the new package version."""
    pkg = code_dir.name("pk")
    (code_dir.root / pkg).mkdir()
    (code_dir.root / pkg / "__init__.py").write_text(f"from {pkg}.core import V\n")
    (code_dir.root / pkg / "core.py").write_text("V = 1\n")
    new_core, new_init = code_dir.root / "core_v2.py", code_dir.root / "v2" / "__init__.py"
    new_core.write_text("V = 2\n")
    new_init.parent.mkdir()
    new_init.write_text("from .core import V\nfrom . import core as same\n")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        assert node.code.current(pkg).core.V == 1
        node.code.load(f"{pkg}.core", new_core)
        node.code.load(pkg, new_init)
        new = node.code.current(pkg)
        assert new.core is node.code.current(f"{pkg}.core") is new.same
        assert (new.V, new.core.V) == (2, 2)
