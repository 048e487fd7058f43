"""`make demo`'s script, run as is: exit code and the lines that tell the story."""

from __future__ import annotations

import subprocess
import sys

import pytest

# the whole demo (three builds, four installs, a restart): on a loaded 2-core machine it has
# taken ~120 s, over pytest-timeout's 120 s default; the subprocess has its own 300 s
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_demo_script_passes_every_check() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sample_app.demo"], capture_output=True, text=True, timeout=300
    )
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    for line in (
        "✓ v1 greets with Hello",
        "✓ greeter says Howdy",
        "✓ greeter kept its pid",
        "✓ counter state migrated: n kept, history added",
        "✓ the TCP connection opened on v1 answers in the v2 format",
        "✓ counter state migrated down",
        "✓ zero failed calls during the upgrades",
        "✓ the node comes back on the permanent release 2.0.0",
    ):
        assert line in out, f"missing {line!r} in:\n{out}"
    # the websocket chat room: one connection opened on v1, answered v1 → v2 → v1 → v2 with
    # its per-connection count migrated each way, the room's history kept by its GenServer
    flat = " ".join(out.split())  # rich wraps the long check lines
    for line in (
        "✓ the websocket chat room answers in the v1 format (#1 alice: hello (you sent 1))",
        "✓ the websocket opened on v1 is answered by v2, its state migrated "
        "([v2] #2 alice: still there? (you sent 2))",
        "✓ the same websocket answers in the v1 format again (#3 alice: back (you sent 3))",
        "([v2] #4 alice: still there? (you sent 4))",
        "✓ the room's history survived (a GenServer, same pid) (4 lines",
        "✓ bob heard alice's lines, each relayed in the version of its moment",
        "✓ one websocket connection throughout, still open at the end",
    ):
        assert line in flat, f"missing {line!r} in:\n{out}"
    assert "checks held" in out
    assert "✗" not in out
