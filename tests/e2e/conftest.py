"""Shared e2e fixtures: sample releases built once per session through the real CLI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.mkroot import NodeProc, cli

SAMPLE = Path(__file__).resolve().parents[2] / "sample_app" / "versions"


@pytest.fixture(scope="session")
def sample_builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<out>/sample-{1,2,3}.0.0.tar.gz`` with relups 1→2 and 2→3 (out/sample is the root)."""
    work = tmp_path_factory.mktemp("sample")
    out = work / "rel"
    for d in ("v1", "v2", "v3"):
        shutil.copytree(SAMPLE / d, work / d)
        cli("build", "--project", str(work / d), "--out", str(out), check=True)
    rel = str(out / "sample")
    cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", rel, check=True)
    cli("relup", "--to", "3.0.0", "--from", "2.0.0", "--rel-dir", rel, check=True)
    return out


@pytest.fixture
def nodes() -> Iterator[list[NodeProc]]:
    """Nodes started by a test; all are stopped (or killed) at the end."""
    started: list[NodeProc] = []
    yield started
    for n in started:
        n.close()
