"""Rollback puts everything back by value (issue 13, "rollback by value").

1,000 workers whose async ``code_change`` (which the preflight cannot run) mutates the state
in place and fails on one of them, after the script has already changed the top
supervisor's specs and intensity, started a child new in its specs and stopped another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.client import Client
from tests.fixtures.fleet_code import LATE
from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = pytest.mark.e2e

# worker 777's code_change passes the preflight's trial (on a copy) and fails in the
# install, after changing the live dict in place: only a rollback by value undoes that
MUTATING_CODE_CHANGE = (
    LATE
    + """
async def code_change(old_vsn, state, extra):
    # the everyday Python idiom: change the dict in place and hand it back
    state["v2"] = True
    if state["id"] == 777:
        late = _late(state)
        state["id"] = -777
        if late:
            raise RuntimeError("cannot migrate worker 777")
    return ("ok", state)
"""
)

SUP_V2 = """
def init(args):
    return ("ok", ({"strategy": "one_for_one", "intensity": 9, "period": 30}, [
        {"id": "pool", "start": ("fleet.pool", "start_link", []), "type": "supervisor",
         "modules": ["fleet.pool"]},
        {"id": "conns", "start": ("fleet.conn", "start_sup", []), "type": "supervisor",
         "modules": ["fleet.conn"]},
        {"id": "listener", "start": ("fleet.listener", "start_link", []),
         "modules": ["fleet.listener"]},
        {"id": "extra", "start": ("fleet.extra", "start_link", []),
         "modules": ["fleet.extra"]}]))
"""

EXTRA = """
from relhandler.runtime import gen_server

def start_link():
    return gen_server.start_link(__name__, None, name="fleet_extra")

def init(args):
    return ("ok", None)

def handle_call(req, from_, state):
    return ("reply", "extra", state)

def handle_cast(msg, state):
    return ("noreply", state)
"""

# supervisor changes first (the cookbook's), then the workers' code_change that fails
APPUP = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [
  ["add_module", "fleet.extra"],
  ["update", "fleet.sup", "supervisor"],
  ["apply", "supervisor", "restart_child", ["fleet_sup", "extra"]],
  ["apply", "supervisor", "terminate_child", ["fleet_sup", "listener"]],
  ["update", "fleet.worker", {{ change = "advanced", extra = [] }}],
]

[[down]]
to = "1.0.0"
instructions = [
  ["update", "fleet.worker", {{ change = "advanced", extra = [] }}],
  ["update", "fleet.sup", "supervisor"],
  ["delete_module", "fleet.extra"],
]
"""


def j(*args: str) -> Any:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rpc(root: Path, target: str, *args: Any) -> Any:
    mod, fun = target.split(":")
    with Client(root) as c:
        return c.call("rpc", {"module": mod, "function": fun, "args": list(args)})


def test_rollback_restores_states_supervisor_specs_and_children_by_value(
    tmp_path: Path, nodes: list[NodeProc]
) -> None:
    from bench.fleet import build_fleet

    out = build_fleet(
        tmp_path,
        MUTATING_CODE_CHANGE,
        v2_files={"sup.py": SUP_V2, "extra.py": EXTRA},
        appup=APPUP,
    )
    root = tmp_path / "froot"
    j("deploy", str(out / "fleet-1.0.0.tar.gz"), "--root", str(root))
    nodes.append(start_node(root))
    before = rpc(root, "fleet.api:snapshot")
    assert len(before) == 1000
    sup_before = rpc(root, "fleet.api:sup_info")
    assert sup_before == {
        "intensity": 1,
        "period": 5.0,
        "children": [["pool", True], ["conns", True], ["listener", True]],
    }
    j("unpack", str(out / "fleet-2.0.0.tar.gz"), "--root", str(root))
    script = j("check", "--vsn", "2.0.0", "--rel-dir", str(out / "fleet"))["relup"]["up"]["1.0.0"]
    # the supervisor is changed, a child started and one stopped before the workers fail
    texts = [json.dumps(i) for i in script]
    first_worker_cc = next(k for k, t in enumerate(texts) if "code_change" in t and "worker" in t)
    assert any("restart_child" in t for t in texts[:first_worker_cc])
    assert any("terminate_child" in t for t in texts[:first_worker_cc])

    r = cli("install", "2.0.0", "--root", str(root), "--json")
    assert r.returncode == 1, r.stdout
    err = json.loads(r.stdout)["error"]
    assert "cannot migrate worker 777" in err["message"] and "rolled back" in err["message"]

    after = rpc(root, "fleet.api:snapshot")
    assert after == before  # same pids; every state by value, the failing one's too
    assert rpc(root, "fleet.api:sup_info") == sup_before  # specs, flags, children
    assert rpc(root, "fleet.api:version") == "v1"
    assert rpc(root, "fleet.api:ping_all") == 1000  # everyone resumed
    assert rpc(root, "fleet.api:tcp_port") > 0  # the listener the script stopped runs again
