"""The release handler on real nodes, driven by the real CLI (issue: release handler)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.client import Client
from relhandler.handler import store
from relhandler.release.relup import read_relup
from tests.fixtures.fleet_code import LATE
from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = pytest.mark.e2e


def j(*args: str) -> Any:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rpc(root: Path, target: str, *args: Any) -> Any:
    mod, fun = target.split(":")
    with Client(root) as c:
        return c.call("rpc", {"module": mod, "function": fun, "args": list(args)})


def statuses(root: Path) -> dict[str, str]:
    return {r["version"]: r["status"] for r in j("releases", "--root", str(root))}


def deployed(
    tmp_path: Path, builds: Path, nodes: list[NodeProc], env: dict[str, str] | None = None
) -> Path:
    root = tmp_path / "root"
    j("deploy", str(builds / "sample-1.0.0.tar.gz"), "--root", str(root))
    nodes.append(start_node(root, env=env))
    return root


def tree_snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and "run" not in p.relative_to(root).parts
        and "log" not in p.relative_to(root).parts
    }


def test_upgrade_and_downgrade_keep_pids_state_and_connections(
    tmp_path: Path, sample_builds: Path, nodes: list[NodeProc]
) -> None:
    root = deployed(tmp_path, sample_builds, nodes)
    pids = {m: rpc(root, f"sample.{m}:pid") for m in ("greeter", "counter")}
    for _ in range(5):
        rpc(root, "sample.counter:incr")
    conn = socket.create_connection(("127.0.0.1", rpc(root, "sample.listener:port")), timeout=5)
    f = conn.makefile("rw")
    f.write("a\n")
    f.flush()
    assert f.readline().strip() == "echo: a"

    results: list[Any] = []
    stop = threading.Event()

    def load() -> None:
        with Client(root) as c:
            while not stop.is_set():
                try:
                    c.call("rpc", {"module": "sample.counter", "function": "incr", "args": []})
                    results.append("ok")
                except Exception as e:
                    results.append(e)

    t = threading.Thread(target=load)
    t.start()
    try:
        up = j("upgrade", str(sample_builds / "sample-2.0.0.tar.gz"), "--root", str(root))
        assert up["install"]["mode"] == "up"
        assert rpc(root, "sample.greeter:greet", "Alice") == "Howdy, Alice! Welcome..."
        st = rpc(root, "sample.counter:get")
        assert st["n"] >= 5
        assert all(isinstance(x, int) for x in st["history"])  # migrated, then grown
        f.write("b\n")
        f.flush()
        assert f.readline().strip() == "[v2] b"
        assert {m: rpc(root, f"sample.{m}:pid") for m in pids} == pids

        down = j("downgrade", "1.0.0", "--root", str(root))
        assert down["install"]["mode"] == "down"
        assert rpc(root, "sample.greeter:greet", "Bob") == "Hello, Bob!"
        assert set(rpc(root, "sample.counter:get")) == {"n"}  # history migrated away
        f.write("c\n")
        f.flush()
        assert f.readline().strip() == "echo: c"
        assert {m: rpc(root, f"sample.{m}:pid") for m in pids} == pids
    finally:
        stop.set()
        t.join(30)
    assert results
    assert [r for r in results if r != "ok"] == []
    assert statuses(root) == {"1.0.0": "permanent", "2.0.0": "old"}


def test_restart_boots_permanent_release(
    tmp_path: Path, sample_builds: Path, nodes: list[NodeProc]
) -> None:
    root = deployed(tmp_path, sample_builds, nodes)
    j("unpack", str(sample_builds / "sample-2.0.0.tar.gz"), "--root", str(root))
    j("install", "2.0.0", "--root", str(root))
    assert statuses(root) == {"1.0.0": "permanent", "2.0.0": "current"}
    nodes[-1].kill9()
    nodes.append(start_node(root))
    assert j("status", "--root", str(root))["release"]["version"] == "1.0.0"
    assert statuses(root) == {"1.0.0": "permanent", "2.0.0": "unpacked"}
    j("install", "2.0.0", "--root", str(root))
    j("make-permanent", "2.0.0", "--root", str(root))
    nodes[-1].kill9()
    nodes.append(start_node(root))
    assert j("status", "--root", str(root))["release"]["version"] == "2.0.0"
    assert statuses(root) == {"1.0.0": "old", "2.0.0": "permanent"}


def test_remove_refuses_current_and_permanent_and_keeps_shared_lib_dirs(
    tmp_path: Path, sample_builds: Path, nodes: list[NodeProc]
) -> None:
    root = deployed(tmp_path, sample_builds, nodes)
    j("upgrade", str(sample_builds / "sample-2.0.0.tar.gz"), "--root", str(root))
    j("unpack", str(sample_builds / "sample-3.0.0.tar.gz"), "--root", str(root))
    j("install", "3.0.0", "--root", str(root))
    assert statuses(root) == {"1.0.0": "old", "2.0.0": "permanent", "3.0.0": "current"}
    for vsn, status in (("2.0.0", "permanent"), ("3.0.0", "current")):
        r = cli("remove", vsn, "--root", str(root))
        assert r.returncode == 1
        assert status in r.stderr
    res = j("remove", "1.0.0", "--root", str(root))
    assert res["removed_lib_dirs"] == ["lib/sample-1.0.0"]
    assert not (root / "lib/sample-1.0.0").exists()
    assert not (root / "releases/1.0.0").exists()
    assert (root / "lib/sample-2.0.0").exists()
    assert statuses(root) == {"2.0.0": "permanent", "3.0.0": "current"}


# hostile tarballs: tests/e2e/test_bad_inputs.py (one node for every kind)


def _fleet(tmp_path: Path, nodes: list[NodeProc], v2_code_change: str) -> tuple[Path, Path]:
    from bench.fleet import build_fleet

    out = build_fleet(tmp_path, v2_code_change)
    root = tmp_path / "froot"
    j("deploy", str(out / "fleet-1.0.0.tar.gz"), "--root", str(root))
    nodes.append(start_node(root))
    return root, out


def test_failed_code_change_rolls_back_in_place(tmp_path: Path, nodes: list[NodeProc]) -> None:
    # worker 777's code_change passes its trial in the preflight and fails in the install
    # (a failure no trial can foresee), so this exercises the rollback
    root, out = _fleet(
        tmp_path,
        nodes,
        LATE
        + """
async def code_change(old_vsn, state, extra):
    if state["id"] == 777 and _late(state):
        raise RuntimeError("cannot migrate worker 777")
    return ("ok", {**state, "v2": True})
""",
    )
    before = rpc(root, "fleet.api:snapshot")
    assert len(before) == 1000
    j("unpack", str(out / "fleet-2.0.0.tar.gz"), "--root", str(root))
    r = cli("install", "2.0.0", "--root", str(root), "--json")
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert "cannot migrate worker 777" in err["message"]
    assert "rolled back" in err["message"]
    assert err["details"]["module"] == "fleet.worker"
    after = rpc(root, "fleet.api:snapshot")
    assert after == before  # same pids, exact v1 states
    assert rpc(root, "fleet.api:version") == "v1"  # v1 code
    assert statuses(root) == {"1.0.0": "permanent", "2.0.0": "unpacked"}
    assert rpc(root, "fleet.api:ping_all") == 1000  # everyone resumed


def test_preflight_names_exactly_the_failing_processes(
    tmp_path: Path, nodes: list[NodeProc]
) -> None:
    root, out = _fleet(
        tmp_path,
        nodes,
        """
def code_change(old_vsn, state, extra):
    if state["id"] % 250 == 3:
        raise ValueError("bad state %d" % state["id"])
    return ("ok", {**state, "v2": True})
""",
    )
    before = rpc(root, "fleet.api:snapshot")
    j("unpack", str(out / "fleet-2.0.0.tar.gz"), "--root", str(root))
    r = cli("install", "2.0.0", "--dry-run", "--root", str(root), "--json")
    assert r.returncode == 1
    failures = json.loads(r.stdout)["error"]["details"]["failures"]
    pid_of = {str(st["id"]): pid for pid, st in before.items()}
    assert sorted(f["pid"] for f in failures) == sorted(pid_of[str(i)] for i in (3, 253, 503, 753))
    assert all("bad state" in f["error"] for f in failures)
    assert rpc(root, "fleet.api:snapshot") == before
    assert rpc(root, "fleet.api:version") == "v1"
    assert statuses(root) == {"1.0.0": "permanent", "2.0.0": "unpacked"}


def _crash_after(tmp_path: Path, builds: Path, nodes: list[NodeProc], *, sample: bool) -> None:
    root = deployed(tmp_path, builds, nodes)
    j("unpack", str(builds / "sample-2.0.0.tar.gz"), "--root", str(root))
    script = read_relup(root / "releases/2.0.0/relup.toml").up_from("1.0.0")
    assert script is not None
    n = len(script.instructions)
    pnr = script.instructions.index(["point_of_no_return"])
    steps = list(range(pnr, n))
    if sample:
        # the point of no return, the supervisor's code_change, the apply that starts
        # the new child, and the last step
        texts = [str(i) for i in script.instructions]
        picks = {pnr, n - 1}
        picks |= {k for k, t in enumerate(texts) if "restart_child" in t}
        picks |= {k for k, t in enumerate(texts) if "code_change" in t and "sample.sup" in t}
        steps = sorted(picks)
    for k in steps:
        nodes[-1].close()
        nodes.append(start_node(root, env={"RELHANDLER_TEST_CRASH_AFTER": str(k)}))
        r = cli("install", "2.0.0", "--root", str(root))
        assert r.returncode == 3, (k, r.stderr)  # the node died under us
        nodes[-1].proc.wait(30)
        rels = store.read_releases(root)  # parses
        assert {x.version: x.status for x in rels.releases} == {
            "1.0.0": "permanent",
            "2.0.0": "unpacked",
        }
        nodes.append(start_node(root))
        assert j("status", "--root", str(root))["release"]["version"] == "1.0.0"
        assert rpc(root, "sample.greeter:greet", "X") == "Hello, X!"


def test_crash_after_sampled_instructions_leaves_a_consistent_root(
    tmp_path: Path, sample_builds: Path, nodes: list[NodeProc]
) -> None:
    _crash_after(tmp_path, sample_builds, nodes, sample=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_crash_after_every_instruction_leaves_a_consistent_root(
    tmp_path: Path, sample_builds: Path, nodes: list[NodeProc]
) -> None:
    _crash_after(tmp_path, sample_builds, nodes, sample=False)


def test_install_unknown_and_current_release_are_refused(
    tmp_path: Path, sample_builds: Path, nodes: list[NodeProc]
) -> None:
    root = deployed(tmp_path, sample_builds, nodes)
    r = cli("install", "9.9.9", "--root", str(root))
    assert (r.returncode, "not unpacked" in r.stderr) == (2, True)  # bad input: unpack it
    assert "relhandler unpack" in r.stderr
    r = cli("install", "1.0.0", "--root", str(root))
    assert (r.returncode, "already installed" in r.stderr) == (1, True)
    r = cli("make-permanent", "9.9.9", "--root", str(root))
    assert (r.returncode, "no such release" in r.stderr) == (2, True)


def test_failed_rollback_restarts_on_the_permanent_release(
    tmp_path: Path, nodes: list[NodeProc]
) -> None:
    from bench.fleet import build_fleet

    out = build_fleet(
        tmp_path,
        LATE
        + """
async def code_change(old_vsn, state, extra):
    if state["id"] == 3 and _late(state):
        raise RuntimeError("cannot migrate worker 3")
    return ("ok", state)
""",
        n=10,
    )
    root = tmp_path / "froot"
    j("deploy", str(out / "fleet-1.0.0.tar.gz"), "--root", str(root))
    node = start_node(root, env={"RELHANDLER_TEST_FAIL_ROLLBACK": "1"})
    nodes.append(node)
    before_pid = j("status", "--root", str(root))["pid"]
    j("unpack", str(out / "fleet-2.0.0.tar.gz"), "--root", str(root))
    r = cli("install", "2.0.0", "--root", str(root), "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["error"]["code"] == "rollback_failed"
    # the node stops in order and re-executes itself (same OS process) on the permanent
    # release; until it has, the half-installed v2 code may still answer
    import time

    deadline = time.monotonic() + 30
    version = None
    while time.monotonic() < deadline:
        try:
            version = rpc(root, "fleet.api:version")
        except Exception:
            version = None
        if version == "v1":
            break
        time.sleep(0.1)
    assert version == "v1"
    st = j("status", "--root", str(root))
    assert st["pid"] == before_pid
    assert st["release"]["version"] == "1.0.0"
    assert statuses(root) == {"1.0.0": "permanent", "2.0.0": "unpacked"}
    assert "rollback failed" in node.log_text()
