"""Restart-type upgrades end to end (issue 16): a bundled dependency not marked hot changes,
the relup restarts the node, and upgrade/downgrade wait for it, report it and make the
release permanent; a release that cannot boot falls back to the permanent one (exit 1)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.depproj import DepProject, rh
from tests.fixtures.mkroot import NodeProc, start_node

pytestmark = pytest.mark.e2e


def _json(*args: str) -> Any:
    r = rh(*args, "--json")
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


def _statuses(root: Path) -> dict[str, str]:
    return {r["version"]: r["status"] for r in _json("releases", "--root", str(root))}


def _dep_version(root: Path) -> str:
    r = rh("rpc", "dep.uses_dep:version", "[]", "--root", str(root))
    assert r.returncode == 0, r.stderr
    return str(json.loads(r.stdout))


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> DepProject:
    """Releases 0.1.0, 0.2.0 and 0.3.0 bundling rh_testdep 1.0, 2.0 and a 3.0 that fails
    at import (the app's start imports it), built once for the module."""
    p = DepProject(tmp_path_factory.mktemp("depproj"))
    p.wheel("1.0")
    p.wheel("2.0")
    p.wheel("3.0", init="raise RuntimeError('rh_testdep 3.0 is broken')\n")
    p.build("0.1.0", "1.0")
    p.build("0.2.0", "2.0")
    p.build("0.3.0", "3.0")
    p.relup("0.2.0", "0.1.0")
    p.relup("0.3.0", "0.1.0")
    return p


def _reboot(node: NodeProc, nodes: list[NodeProc]) -> None:
    node.kill9()
    nodes.append(start_node(node.root))


def test_upgrade_and_downgrade_through_a_restart(
    proj: DepProject, tmp_path: Path, nodes: list[NodeProc]
) -> None:
    p = proj
    root = tmp_path / "root"
    assert rh("deploy", p.tarball("0.1.0"), "--root", str(root)).returncode == 0
    node = start_node(root)
    nodes.append(node)
    assert _dep_version(root) == "1.0"

    # before anything is lost: the dry run says the node restarts, why, and whose state goes
    assert rh("unpack", p.tarball("0.2.0"), "--root", str(root)).returncode == 0
    plan = _json("install", "0.2.0", "--dry-run", "--root", str(root))
    assert plan["restart"] is True and plan["dry_run"] is True
    assert "bundled dependency rh_testdep 1.0 → 2.0" in plan["restart_reasons"]
    assert {"dep_sup", "dep_server"} <= {p["name"] for p in plan["lost"]["named"]}
    assert plan["lost"]["count"] >= 4
    human = rh("install", "0.2.0", "--dry-run", "--root", str(root))
    assert "this install RESTARTS the node" in human.stdout, human.stdout
    assert _statuses(root) == {"0.1.0": "permanent", "0.2.0": "unpacked"}  # nothing changed

    r = rh("upgrade", p.tarball("0.2.0"), "--root", str(root), "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "this install RESTARTS the node (bundled dependency rh_testdep 1.0 → 2.0)" in r.stderr
    assert "dep_sup" in r.stderr
    up = json.loads(r.stdout)
    assert up["restarted"] is True
    assert up["install"]["restarted"] is True and up["install"]["release"] == "0.2.0"
    assert up["make_permanent"] == {"version": "0.2.0", "status": "permanent"}
    assert _dep_version(root) == "2.0"
    assert _statuses(root) == {"0.1.0": "old", "0.2.0": "permanent"}
    _reboot(node, nodes)  # kill -9 + start: the permanent release boots
    node = nodes[-1]
    assert _dep_version(root) == "2.0"

    r = rh("downgrade", "0.1.0", "--root", str(root), "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "this install RESTARTS the node (bundled dependency rh_testdep 2.0 → 1.0)" in r.stderr
    down = json.loads(r.stdout)
    assert down["restarted"] is True
    assert down["make_permanent"] == {"version": "0.1.0", "status": "permanent"}
    assert _dep_version(root) == "1.0"
    assert _statuses(root)["0.1.0"] == "permanent"
    _reboot(node, nodes)
    assert _dep_version(root) == "1.0"


@pytest.mark.slow
def test_install_alone_waits_and_leaves_the_release_current(
    proj: DepProject, tmp_path: Path, nodes: list[NodeProc]
) -> None:
    p = proj
    root = tmp_path / "root"
    assert rh("deploy", p.tarball("0.1.0"), "--root", str(root)).returncode == 0
    nodes.append(start_node(root))
    assert rh("unpack", p.tarball("0.2.0"), "--root", str(root)).returncode == 0
    r = rh("install", "0.2.0", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert "restarted" in r.stdout
    assert _dep_version(root) == "2.0"
    assert _statuses(root) == {"0.1.0": "permanent", "0.2.0": "current"}


@pytest.mark.slow
def test_a_release_that_cannot_boot_falls_back_to_the_permanent_one(
    proj: DepProject, tmp_path: Path, nodes: list[NodeProc]
) -> None:
    p = proj
    root = tmp_path / "root"
    assert rh("deploy", p.tarball("0.1.0"), "--root", str(root)).returncode == 0
    node = start_node(root)
    nodes.append(node)
    r = rh("upgrade", p.tarball("0.3.0"), "--root", str(root), "--json")
    assert r.returncode == 1, (r.stdout, r.stderr)
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "restart_failed"
    assert "rh_testdep 3.0 is broken" in err["message"]
    assert "fell back to the permanent release 0.1.0" in err["message"]
    assert node.proc.poll() is None  # the same OS process, re-executed twice
    assert _json("ping", "--root", str(root))["release"] == "0.1.0"
    assert _dep_version(root) == "1.0"
    assert _statuses(root) == {"0.1.0": "permanent", "0.3.0": "unpacked"}


def _ask_loop(port: int, stop: threading.Event, out: list[tuple[float, str]]) -> None:
    """Connect, send a line, read the answer; again and again until ``stop``. Each result
    is (time connected, answer or error name)."""
    while not stop.is_set():
        t = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                t = time.monotonic()
                s.sendall(b"version?\n")
                answer = s.makefile("rb").readline().decode().strip() or "eof"
        except ConnectionRefusedError:
            answer = "refused"
        except OSError as e:  # an established connection closed by the exec: documented
            answer = type(e).__name__
        out.append((t, answer))


def test_no_connection_is_refused_during_a_restart(
    proj: DepProject, tmp_path: Path, nodes: list[NodeProc]
) -> None:
    root = tmp_path / "root"
    assert rh("deploy", proj.tarball("0.1.0"), "--root", str(root)).returncode == 0
    nodes.append(start_node(root))
    out: list[tuple[float, str]] = []
    stop = threading.Event()
    client = threading.Thread(target=_ask_loop, args=(proj.port, stop, out), daemon=True)
    client.start()
    try:
        deadline = time.monotonic() + 10
        while not out and time.monotonic() < deadline:
            time.sleep(0.02)
        began = time.monotonic()
        up = _json("upgrade", proj.tarball("0.2.0"), "--root", str(root))
        assert up["restarted"] is True
        ended = time.monotonic()
        while not any(t > ended for t, _ in out) and time.monotonic() < ended + 10:
            time.sleep(0.02)
    finally:
        stop.set()
        client.join(60)
    answers = [a for _, a in out]
    assert "refused" not in answers, answers
    assert answers[0] == "1.0" and answers[-1] == "2.0", answers
    during = [a for t, a in out if began < t < ended]
    # connections made while the node restarted waited in the backlog and were served
    assert "2.0" in during, (during, answers)


def test_check_names_the_restart_and_strict_refuses_it(proj: DepProject) -> None:
    rel = str(proj.out / "dep")
    r = rh("check", "--vsn", "0.2.0", "--rel-dir", rel, "--strict", "--json")
    assert r.returncode == 1, (r.stdout, r.stderr)
    out = json.loads(r.stdout)
    [problem] = [p for p in out["problems"] if p.startswith("restart:")]
    assert "the upgrade from 0.1.0 restarts the node" in problem
    assert "bundled dependency rh_testdep 1.0 → 2.0" in problem
    assert "supervisor dep_sup (dep.sup) with children server, lines" in problem
    [restart] = out["restarts"]
    assert restart["dependencies"] == [{"name": "rh_testdep", "from": "1.0", "to": "2.0"}]
    ok = rh("check", "--vsn", "0.2.0", "--rel-dir", rel, "--strict", "--allow-restart")
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert "restart: the upgrade from 0.1.0 restarts the node" in ok.stderr  # still said
    plain = rh("check", "--vsn", "0.2.0", "--rel-dir", rel)
    assert plain.returncode == 0 and "rh_testdep 1.0 → 2.0" in plain.stderr
