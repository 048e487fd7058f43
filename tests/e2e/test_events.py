"""The event log on real nodes (issue 18, "the event log"): an upgrade writes the documented
events in order, a consumer validates them against the shipped schema, `relhandler events`
reads them with the node down, and a full disk under the log does not stop an upgrade."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from relhandler.control.client import Client
from relhandler.errors import RelhandlerError
from relhandler.handler.events import schema
from tests.e2e.test_release_handler import j
from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def events_of(root: Path, *extra: str) -> list[dict[str, Any]]:
    r = cli("events", "--root", str(root), "--json", *extra)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def consume(events: list[dict[str, Any]]) -> None:
    """What a pipeline's consumer does: validate every line against the published schema
    (`relhandler events --schema`, the same file the package ships)."""
    published = json.loads(cli("events", "--schema", check=True).stdout)
    assert published == schema()
    v = jsonschema.Draft202012Validator(published)
    for ev in events:
        errors = sorted(v.iter_errors(ev), key=str)
        assert not errors, (ev, [e.message for e in errors])


def test_an_upgrade_emits_the_documented_events_in_order(
    tmp_path: Path, sample_builds: Path, nodes: list[NodeProc]
) -> None:
    root = tmp_path / "root"
    j("deploy", str(sample_builds / "sample-1.0.0.tar.gz"), "--root", str(root))
    nodes.append(start_node(root))
    up = j("upgrade", str(sample_builds / "sample-2.0.0.tar.gz"), "--root", str(root))
    # an rpc whose function raises: its process exits with a non-normal reason
    with Client(root) as c, pytest.raises(RelhandlerError, match="ValueError"):
        c.call("rpc", {"module": "builtins", "function": "int", "args": ["x"]})
    nodes[-1].close()  # SIGTERM: an orderly stop
    assert nodes[-1].proc.returncode == 0

    evs = events_of(root)  # the node is down: read from the files
    consume(evs)
    kinds = [(e["kind"], e["data"].get("phase")) for e in evs if e["kind"] != "install.step"]
    assert kinds == [
        ("node.start", None),
        ("unpack", None),
        ("install.start", None),
        ("install.phase", "planned"),
        ("install.phase", "checked"),
        ("install.phase", "preflight"),
        ("install.phase", "point_of_no_return"),
        ("install.phase", "committed"),
        ("install.end", None),
        ("make_permanent", None),
        ("process.exit", None),
        ("node.stop", None),
    ]
    by = {e["kind"]: e for e in evs}
    assert by["unpack"]["data"]["version"] == "2.0.0" and by["unpack"]["data"]["ok"]
    assert by["install.end"]["data"] == {
        "version": "2.0.0",
        "from": "1.0.0",
        "outcome": "installed",
        "mode": "up",
        "ms": by["install.end"]["data"]["ms"],
    }
    # every instruction, in order, between the point of no return and the commit
    steps = [e["data"] for e in evs if e["kind"] == "install.step"]
    assert [s["instruction"] for s in steps] == [s["instruction"] for s in up["install"]["steps"]]
    assert [s["index"] for s in steps] == sorted(s["index"] for s in steps)
    i = [e["kind"] for e in evs]
    assert i.index("install.phase") < i.index("install.step") < i.index("install.end")
    crash = by["process.exit"]["data"]
    assert crash["crash"] is True and crash["reason"].startswith("ValueError: invalid literal")
    assert crash["initial_call"] == "rpc"
    # the envelope: one boot, seq strictly increasing, release = what ran at the time
    assert len({e["boot"] for e in evs}) == 1
    assert [e["seq"] for e in evs] == sorted({e["seq"] for e in evs})
    assert by["install.start"]["release"] == "1.0.0" and by["make_permanent"]["release"] == "2.0.0"
    # --since: only what came after the install ended
    later = events_of(root, "--since", str(by["install.end"]["ts"]))
    assert [e["kind"] for e in later] == [
        "install.end",
        "make_permanent",
        "process.exit",
        "node.stop",
    ]
    human = cli("events", "--root", str(root), check=True).stdout.splitlines()
    assert len(human) == len(evs)
    assert "install.end" in human[-4] and "outcome=installed" in human[-4]


@pytest.mark.slow  # the in-process case is tests/unit/handler/test_events.py
def test_a_full_disk_under_the_event_log_does_not_stop_an_upgrade(
    tmp_path: Path, sample_builds: Path, nodes: list[NodeProc]
) -> None:
    root = tmp_path / "root"
    j("deploy", str(sample_builds / "sample-1.0.0.tar.gz"), "--root", str(root))
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.fullevents", "start", "--root", str(root)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    nodes.append(NodeProc(root, proc, log))
    nodes[-1].wait_ready()
    up = j("upgrade", str(sample_builds / "sample-2.0.0.tar.gz"), "--root", str(root))
    assert up["install"]["version"] == "2.0.0"
    with Client(root) as c:
        st = c.call("status")
    assert st["release"]["version"] == "2.0.0"
    assert st["events"]["written"] == 0
    assert st["events"]["dropped"] >= 10  # node.start, unpack, install.*, make_permanent
    assert events_of(root) == []
    assert "No space left on device" in log.read_text()
