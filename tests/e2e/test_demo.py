"""`make demo`'s script, run as is: exit code and the lines that tell the story."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


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
    assert "checks held" in out
    assert "✗" not in out
