"""Supervisor strategies, restart intensity, child spec modules (issue 3, item 6)."""

from __future__ import annotations

import pytest

from relhandler.runtime import Node, gen_server, supervisor, sys

from .conftest import CodeDir, until

WORKER = """
def start_link(ident):
    from relhandler.runtime import gen_server
    return gen_server.start_link(__name__, ident)

def init(ident):
    return ("ok", ident)

def handle_call(req, from_, s):
    if req == "crash":
        raise RuntimeError("crash " + s)
    return ("reply", s, s)

def handle_cast(m, s):
    return ("noreply", s)

def get_modules(s):
    return ["plugin_a", "plugin_b"]
"""

SUP = """
STRATEGY = {strategy!r}
def init(worker):
    kids = [{{"id": i, "start": (worker, "start_link", [i]),
              "modules": "dynamic" if i == "c" else [worker]}} for i in ("a", "b", "c")]
    return ("ok", ({{"strategy": STRATEGY, "intensity": 3, "period": 60}}, kids))
"""


async def _tree(node: Node, code_dir: CodeDir, strategy: str) -> tuple[object, str]:
    w = code_dir.name("worker")
    s = code_dir.name(f"sup_{strategy}")
    code_dir.write("worker", WORKER)
    code_dir.write(f"sup_{strategy}", SUP.format(strategy=strategy))
    node.code.set_path([code_dir.root])
    sup = await supervisor.start(s, w)
    return sup, w


async def _pids(sup: object) -> dict[object, object]:
    return {c.id: c.pid for c in await supervisor.which_children(sup)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        pytest.param("one_for_one", {"b"}, id="one_for_one"),
        pytest.param("one_for_all", {"a", "b", "c"}, id="one_for_all"),
        pytest.param("rest_for_one", {"b", "c"}, id="rest_for_one"),
    ],
)
async def test_strategies(code_dir: CodeDir, strategy: str, restarted: set[str]) -> None:
    async with Node() as node:
        sup, _ = await _tree(node, code_dir, strategy)
        before = await _pids(sup)
        with pytest.raises(Exception, match="crash b"):
            await gen_server.call(before["b"], "crash")  # type: ignore[arg-type]

        async def settled() -> dict[object, object]:
            return await _pids(sup)

        await until(lambda: before["b"] not in node.processes)
        after = await settled()
        changed = {k for k in before if before[k] != after[k]}
        assert changed == restarted
        assert all(p is not None and p in node.processes for p in after.values())


async def test_intensity_exceeded_supervisor_exits(code_dir: CodeDir) -> None:
    async with Node() as node:
        sup, _ = await _tree(node, code_dir, "one_for_one")
        for _ in range(4):
            pid = (await _pids(sup))["a"]
            with pytest.raises(Exception, match="crash a"):
                await gen_server.call(pid, "crash")  # type: ignore[arg-type]
            await until(lambda p=pid: p not in node.processes)  # type: ignore[misc]
            if sup not in node.processes:
                break
        await until(lambda: sup not in node.processes)
        assert node.processes == {}


async def test_child_spec_modules_static_and_dynamic(code_dir: CodeDir) -> None:
    async with Node() as node:
        sup, w = await _tree(node, code_dir, "one_for_one")
        kids = await supervisor.which_children(sup)  # type: ignore[arg-type]
        assert [(c.id, c.modules) for c in kids] == [("a", (w,)), ("b", (w,)), ("c", "dynamic")]
        assert await sys.get_modules(kids[2].pid) == ["plugin_a", "plugin_b"]  # type: ignore[arg-type]
        assert await supervisor.count_children(sup) == {  # type: ignore[arg-type]
            "specs": 3,
            "active": 3,
            "supervisors": 0,
            "workers": 3,
        }


async def test_terminate_restart_delete_child_and_simple_one_for_one(code_dir: CodeDir) -> None:
    w = code_dir.name("worker")
    s = code_dir.name("sofo")
    code_dir.write("worker", WORKER)
    code_dir.write(
        "sofo",
        f"""
def init(a):
    return ("ok", ({{"strategy": "simple_one_for_one"}},
                   [{{"id": "w", "start": ({w!r}, "start_link", [])}}]))
""",
    )
    async with Node() as node:
        node.code.set_path([code_dir.root])
        sup = await supervisor.start(s)
        ok, p1 = await supervisor.start_child(sup, ["x"])
        ok2, p2 = await supervisor.start_child(sup, ["y"])
        assert (ok, ok2) == ("ok", "ok")
        assert await gen_server.call(p1, "get") == "x"
        assert [c.pid for c in await supervisor.which_children(sup)] == [p1, p2]
        with pytest.raises(Exception, match="crash y"):
            await gen_server.call(p2, "crash")
        await until(lambda: p2 not in node.processes)
        kids = await supervisor.which_children(sup)
        assert len(kids) == 2 and kids[1].pid != p2
        assert await gen_server.call(kids[1].pid, "get") == "y"  # restarted with its args
        assert await supervisor.terminate_child(sup, p1) == "ok"
        assert [c.pid for c in await supervisor.which_children(sup)] == [kids[1].pid]

        sup2, _ = await _tree(node, code_dir, "one_for_one")
        assert await supervisor.terminate_child(sup2, "b") == "ok"
        assert (await _pids(sup2))["b"] is None
        assert await supervisor.delete_child(sup2, "a") == ("error", "running")
        ok, pid = await supervisor.restart_child(sup2, "b")
        assert ok == "ok" and pid in node.processes
        await supervisor.terminate_child(sup2, "b")
        assert await supervisor.delete_child(sup2, "b") == "ok"
        assert list(await _pids(sup2)) == ["a", "c"]
