"""Hot upgrades of a pure-Python dependency marked in ``hot_deps`` (issue 16, build item 4):
the dependency is a library application, its changed modules are loaded through the code
server (two versions) in dependency order, and the node keeps running: same OS process,
same boot, the GenServer keeps its pid and state; the code then uses the new version.
``check`` says which dependency changes are hot and which restart, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.depproj import DepProject, rh
from tests.fixtures.mkroot import NodeProc, start_node

pytestmark = pytest.mark.e2e

HOT = 'hot_deps = ["rh_testdep"]'

USES_DEP = """
import os

import rh_testdep
from rh_testdep import stamp

import dep.server
from relhandler.runtime import whereis


def version():
    return rh_testdep.VERSION


async def greet():
    return [await dep.server.hello("Ada"), await dep.server.hello("Bob")]


async def probe():
    return {
        "version": rh_testdep.VERSION,  # `import m; m.X` follows the current version
        "stamp": stamp("x"),  # `from m import f` too
        "count": await dep.server.count(),
        "server": str(whereis("dep_server")),
        "os_pid": os.getpid(),
        "file": rh_testdep.core.__file__,
    }
"""


def _json(*args: str) -> Any:
    r = rh(*args, "--json")
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


def _wheel(p: DepProject, version: str) -> None:
    """rh_testdep in two modules: the package re-exports a name only this version's
    ``core`` has, so ``core`` must be loaded first, upgrading and downgrading alike."""
    from tests.fixtures.wheels import make_wheel

    only = f"ONLY_{version.replace('.', '_')}"
    make_wheel(
        p.dist,
        "rh_testdep",
        version,
        {
            "rh_testdep/__init__.py": f"from rh_testdep.core import VERSION, stamp, {only}\n",
            "rh_testdep/core.py": (
                f"VERSION = {version!r}\n{only} = True\n\n\n"
                f"def stamp(x):\n    return f'{{x}}@{version}'\n"
            ),
        },
    )


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> DepProject:
    """0.1.0 / 0.2.0 bundle rh_testdep 1.0 / 2.0 marked hot; 0.3.0 bundles 2.0 unmarked."""
    p = DepProject(tmp_path_factory.mktemp("hotdeps"))
    (p.proj / "src/dep/uses_dep.py").write_text(USES_DEP)
    _wheel(p, "1.0")
    _wheel(p, "2.0")
    p.build("0.1.0", "1.0", HOT)
    p.build("0.2.0", "2.0", HOT)
    p.build("0.3.0", "1.0")
    p.relup("0.2.0", "0.1.0")
    p.relup("0.3.0", "0.2.0")
    return p


def _rpc(root: Path, fn: str, *args: Any) -> Any:
    r = rh("rpc", fn, json.dumps(list(args)), "--root", str(root))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_hot_dependency_upgrades_in_place_and_back(
    proj: DepProject, tmp_path: Path, nodes: list[NodeProc]
) -> None:
    p = proj
    rel = p.out / "dep"
    release = (rel / "releases/0.2.0/release.toml").read_text()
    assert 'name = "rh_testdep"' in release and 'type = "load"' in release
    assert "restart_new_emulator" not in (rel / "releases/0.2.0/relup.toml").read_text()

    root = tmp_path / "root"
    assert rh("deploy", p.tarball("0.1.0"), "--root", str(root)).returncode == 0
    nodes.append(start_node(root))
    assert _rpc(root, "dep.uses_dep:greet") == ["Hello, Ada!", "Hello, Bob!"]
    v1 = _rpc(root, "dep.uses_dep:probe")
    assert (v1["version"], v1["stamp"], v1["count"]) == ("1.0", "x@1.0", 2)
    boot = _json("ping", "--root", str(root))["boot_id"]

    up = _json("upgrade", p.tarball("0.2.0"), "--root", str(root))
    assert not up.get("restarted"), up
    v2 = _rpc(root, "dep.uses_dep:probe")
    assert (v2["version"], v2["stamp"]) == ("2.0", "x@2.0")  # the new code is used
    assert "/lib/rh_testdep-2.0/" in v2["file"]
    # no restart: same OS process and boot, the GenServer's pid and state kept
    assert (v2["count"], v2["server"], v2["os_pid"]) == (2, v1["server"], v1["os_pid"])
    ping = _json("ping", "--root", str(root))
    assert (ping["boot_id"], ping["release"]) == (boot, "0.2.0")

    down = _json("downgrade", "0.1.0", "--root", str(root))
    assert not down.get("restarted"), down
    v3 = _rpc(root, "dep.uses_dep:probe")
    assert (v3["version"], v3["stamp"]) == ("1.0", "x@1.0")
    assert (v3["count"], v3["server"], v3["os_pid"]) == (2, v1["server"], v1["os_pid"])
    assert _json("ping", "--root", str(root))["boot_id"] == boot


def test_check_says_which_dependency_changes_are_hot_and_which_restart(
    proj: DepProject,
) -> None:
    rel = proj.out / "dep"
    r = rh("check", "--vsn", "0.2.0", "--rel-dir", str(rel), "--strict")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "warning" not in r.stderr
    assert "0.1.0 → 0.2.0: dependency rh_testdep 1.0 → 2.0: hot (pure Python, in hot_deps" in (
        r.stdout
    )
    assert "restart_new_emulator" in (rel / "releases/0.3.0/relup.toml").read_text()
    r = rh("check", "--vsn", "0.3.0", "--rel-dir", str(rel), "--json")
    deps = json.loads(r.stdout)["dependencies"]["0.2.0"]
    assert deps == [
        {"name": "rh_testdep", "from": "2.0", "to": "1.0", "hot": False, "why": "not in hot_deps"}
    ]
