"""Output outside a terminal: whole tables in a CI log, and `releases` without a node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import SAMPLE
from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = pytest.mark.e2e


def piped(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout to a pipe and an 80-column terminal size, as in a CI log."""
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "relhandler.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_build_check_and_releases_print_whole_rows(
    tmp_path: Path, sample_builds: Path, nodes: list[NodeProc]
) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "project"
    shutil.copytree(SAMPLE / "v1", deep)
    out = deep / "_build" / "rel"
    r = piped("build", "--project", str(deep), "--out", str(out))
    assert r.returncode == 0, r.stderr
    tarball = out / "sample-1.0.0.tar.gz"
    assert str(tarball) in r.stdout  # the whole path, not …/_build/re…
    assert "…" not in r.stdout.replace("sha256", "").split(str(tarball))[0]

    r = piped("check", str(sample_builds / "sample-2.0.0.tar.gz"))
    assert r.returncode == 0, r.stderr
    assert "2.0.0" in r.stdout and "1.0.0" in r.stdout
    assert not any(len(line) > 80 and line.endswith("…") for line in r.stdout.splitlines())

    root = tmp_path / "root"
    cli("deploy", str(sample_builds / "sample-1.0.0.tar.gz"), "--root", str(root), check=True)
    nodes.append(start_node(root))
    cli("unpack", str(sample_builds / "sample-2.0.0.tar.gz"), "--root", str(root), check=True)
    r = piped("releases", "--root", str(root))
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "sample" in line]
    assert any("1.0.0" in x and "permanent" in x for x in rows), r.stdout
    assert any("2.0.0" in x and "unpacked" in x for x in rows), r.stdout


def test_releases_reads_the_disk_when_the_node_is_down(tmp_path: Path, sample_builds: Path) -> None:
    root = tmp_path / "root"
    cli("deploy", str(sample_builds / "sample-1.0.0.tar.gz"), "--root", str(root), check=True)
    r = cli("releases", "--root", str(root), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        {"name": "sample", "version": "1.0.0", "status": "permanent", "apps": ["sample-1.0.0"]}
    ]
    assert "no node is running" in r.stderr
    # an empty directory is still "no node", with its exit code
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("releases", "--root", str(empty)).returncode == 3
