"""The README tour, run literally; and the CLI reference is current."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def tour_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"<!-- tour -->\n```sh\n(.*?)```", text, flags=re.S)


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    blocks = tour_blocks()
    assert len(blocks) >= 3
    script = "set -euo pipefail\n" + "\n".join(blocks)
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RELHANDLER_ROOT", None)
    r = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    try:
        assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        out = r.stdout
        assert '"Hello, Ada!"' in out
        assert '"Hello again, Bob! (1 names)"' in out
        assert "\n2\n" in out  # the count survived the upgrade
        assert '"Hello, Cy!"' in out  # downgraded
    finally:
        subprocess.run(
            [sys.executable, "-m", "relhandler.cli", "stop", "--root", str(tmp_path / "shop-root")],
            capture_output=True,
            timeout=60,
        )


def test_cli_reference_is_current() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "cli_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
