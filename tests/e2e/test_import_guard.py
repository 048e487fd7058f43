"""A release runs on what it ships (issue 14, build item 7): on a real node, a module that
is installed beside relhandler but not shipped with the release cannot be imported, whoever
imports it (the release's code over ``rpc``, a process it spawns, a bundled library's lazy
import); the same package bundled with the release imports from the release's lib dir."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.depproj import DepProject, rh
from tests.fixtures.mkroot import NodeProc, start_node
from tests.fixtures.wheels import make_wheel

pytestmark = pytest.mark.e2e

# installed in the test environment (pytest's and hypothesis' requirements), never one of
# relhandler's runtime requirements
SHIPPED = "iniconfig"
UNSHIPPED = "sortedcontainers"

# the bundled library imports lazily, inside a function, what it does not ship
LIB = """
VERSION = "1.0"


def lazy(name):
    import importlib

    return importlib.import_module(name).__name__
"""

PROBE = """
import importlib

import iniconfig
import rh_testdep
from relhandler.runtime import receive, spawn_monitor


def bundled():
    return iniconfig.__file__


def unshipped(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        return {"type": type(e).__name__, "message": str(e), "name": e.name}
    return "imported"


def lazy(name):
    return rh_testdep.lazy(name)


async def in_a_process(name):
    async def child():
        importlib.import_module(name)

    _pid, ref = spawn_monitor(child)
    msg = await receive(timeout=10, match=lambda m: m[0] == "DOWN" and m[1] == ref)
    return repr(msg[4])
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    p = DepProject(tmp_path_factory.mktemp("guard"))
    make_wheel(p.dist, "rh_testdep", "1.0", {"rh_testdep/__init__.py": LIB})
    # the release's own iniconfig: a wheel of the copy installed beside relhandler
    dist = importlib.metadata.distribution(SHIPPED)
    files = {
        str(f): f.read_text()
        for f in dist.files or ()
        if str(f).startswith(f"{SHIPPED}/") and str(f).endswith(".py")
    }
    make_wheel(p.dist, SHIPPED, dist.version, files)
    (p.proj / "src/dep/probe.py").write_text(PROBE)
    p.build("0.1.0", f'1.0", "{SHIPPED}')  # dependencies = ["rh_testdep==1.0", "iniconfig"]
    root = p.tmp / "root"
    assert rh("deploy", p.tarball("0.1.0"), "--root", str(root)).returncode == 0
    n = start_node(root)
    yield n
    n.close()


def _rpc(root: Path, fn: str, *args: Any) -> Any:
    r = rh("rpc", fn, json.dumps(list(args)), "--root", str(root))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_an_unshipped_package_is_not_importable_on_the_node_and_a_bundled_one_is(
    node: NodeProc,
) -> None:
    root = node.root.resolve()
    # installed beside relhandler (the test process imports it) ...
    assert importlib.import_module(UNSHIPPED).__name__ == UNSHIPPED
    # ... the release's code cannot import it: one line naming the module and the fix
    e = _rpc(node.root, "dep.probe:unshipped", UNSHIPPED)
    assert e["type"] == "NotShippedError" and e["name"] == UNSHIPPED, e
    assert "\n" not in e["message"]
    assert f"module {UNSHIPPED!r} is not shipped with the release" in e["message"]
    assert "[project].dependencies" in e["message"], e
    # nor a bundled library's lazy import, nor a process of the release
    r = rh("rpc", "dep.probe:lazy", json.dumps([UNSHIPPED]), "--root", str(node.root))
    assert r.returncode != 0 and f"module {UNSHIPPED!r} is not shipped" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    down = _rpc(node.root, "dep.probe:in_a_process", UNSHIPPED)
    assert "NotShippedError" in down and UNSHIPPED in down, down
    # nor the rpc op itself
    r = rh("rpc", f"{UNSHIPPED}:SortedList", "[]", "--root", str(node.root))
    assert r.returncode == 2 and f"module {UNSHIPPED!r} is not shipped" in r.stderr, r.stderr
    assert "relhandler which" not in r.stderr
    # relhandler's own test tools are not the release's either
    assert _rpc(node.root, "dep.probe:unshipped", "pytest")["type"] == "NotShippedError"
    # what the release bundles comes from its lib dir, not from relhandler's environment
    f = Path(_rpc(node.root, "dep.probe:bundled"))
    assert f.is_relative_to(root / "lib") and "/deps-" in str(f), f
    assert _rpc(node.root, "dep.probe:lazy", "rh_testdep") == "rh_testdep"
    # the standard library and relhandler's runtime requirements are importable
    assert _rpc(node.root, "dep.probe:lazy", "json") == "json"
    assert _rpc(node.root, "dep.probe:lazy", "rich.text") == "rich.text"
    # a module installed nowhere is the ordinary error
    e = _rpc(node.root, "dep.probe:unshipped", "no_such_module_anywhere")
    assert e["type"] == "ModuleNotFoundError", e
