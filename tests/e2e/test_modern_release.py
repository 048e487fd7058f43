"""Modern Python types in a release, upgraded and downgraded on a real node (issue 14,
"What must be shown" 1; and 14.4: live resources in a state survive the preflight's copy)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.client import Client
from tests.e2e.modapp import build_modapp, models_source
from tests.fixtures.mkroot import NodeProc, cli, start_node
from tests.fixtures.modern import PROBE_FILE, import_normally

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def modapp_builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_modapp(tmp_path_factory.mktemp("modapp"))


def j(*args: str) -> Any:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rpc(root: Path, target: str, *args: Any) -> Any:
    mod, fun = target.split(":")
    with Client(root) as c:
        return c.call("rpc", {"module": mod, "function": fun, "args": list(args)})


def normally(tmp_path: Path, vsn: str) -> Any:
    """The probe of modapp.models ``vsn`` imported the ordinary way, through JSON as rpc."""
    name = f"modapp_models_normal_{vsn.replace('.', '_')}"
    path = tmp_path / f"{name}.py"
    path.write_text(models_source(vsn))
    probe_mod = import_normally("modern_probe_normal", str(PROBE_FILE))
    try:
        import_normally(name, str(path))
        out = probe_mod.probe(name)
    finally:
        sys.modules.pop(name, None)
        sys.modules.pop("modern_probe_normal", None)
    return json.loads(json.dumps(out))


def on_node(root: Path) -> Any:
    return rpc(root, "modapp.probe:probe", "modapp.models")


def test_modern_types_upgrade_and_downgrade_as_imported_normally(
    tmp_path: Path, modapp_builds: Path, nodes: list[NodeProc]
) -> None:
    # a module the relup does not load builds a model on models.Item: check says so
    warnings = j("check", "--vsn", "2.0.0", "--rel-dir", str(modapp_builds / "modapp"))["warnings"]
    assert [w for w in warnings if "modapp.schemas" in w] == [
        f"{modapp_builds}/modapp/lib/modapp-2.0.0/modapp/schemas.py:8: modapp.schemas uses "
        "modapp.models.Item when it loads (a field type); modapp.models changes from 1.0.0 but "
        "the relup does not load modapp.schemas, so it would keep the old Item: load it too, "
        'after modapp.models (["load_module", "modapp.schemas", { dep_mods = '
        '["modapp.models"] }] in its appup; docs/references.md)'
    ], warnings
    root = tmp_path / "root"
    j("deploy", str(modapp_builds / "modapp-1.0.0.tar.gz"), "--root", str(root))
    nodes.append(start_node(root))
    node = nodes[-1]
    assert on_node(root) == normally(tmp_path, "1.0.0")
    pid = rpc(root, "modapp.store:pid")
    v1_orders = [
        {"items": [{"name": "apple", "qty": 2}], "customer": {"name": "ada", "orders": []}},
        {"items": [], "customer": None},
    ]

    def report() -> Any:
        return rpc(root, "modapp.store:report")

    r1 = report()
    assert r1["orders"] == v1_orders and all(r1["current_classes"]) and r1["pickled"]

    up = j("upgrade", str(modapp_builds / "modapp-2.0.0.tar.gz"), "--root", str(root))
    assert up["install"]["mode"] == "up"
    assert on_node(root) == normally(tmp_path, "2.0.0")
    r2 = report()
    assert r2["version"] == "2.0.0" and r2["models_vsn"] == "2.0.0"
    assert r2["orders"] == [{**o, "note": "migrated from 1.0.0"} for o in v1_orders]
    assert all(r2["current_classes"]) and r2["pickled"]
    assert r2["describe"] == ["color", "int"] and r2["cart"] == ["cart", 3]
    assert rpc(root, "modapp.store:pid") == pid
    assert rpc(root, "modapp.tags:fields") == ["name", "aliases"]  # ClassVar is no field

    down = j("downgrade", "1.0.0", "--root", str(root))
    assert down["install"]["mode"] == "down"
    assert on_node(root) == normally(tmp_path, "1.0.0")
    r3 = report()
    assert r3["version"] == "1.0.0" and r3["models_vsn"] == "1.0.0"
    assert r3["orders"] == v1_orders and all(r3["current_classes"]) and r3["pickled"]
    assert rpc(root, "modapp.store:pid") == pid

    # the state's StreamWriter and fd wrapper were shared by every preflight copy, never
    # copied: the connection and the fd are still the live process's, and no copy's
    # finalizer wrote a traceback to the log
    live = rpc(root, "modapp.store:live_resources")
    assert live == ["echo ping\n", "x"]
    log = node.log_text()
    assert "Traceback" not in log, log
    assert "Bad file descriptor" not in log and "EBADF" not in log
