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


# user text shaped like rich markup: a style, a bare closing tag (rich raises on it when it
# reads markup) and a link
MARKUP = "[bold]x[/bold] [/] [link=http://e.vil]y[/link]"
MK_RELUP = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [["load_object_code", "mk", "2.0.0", ["mk.boom"]], ["point_of_no_return"],
                ["load", "mk.boom", "brutal_purge", "brutal_purge"]]

[[down]]
to = "1.0.0"
instructions = [["load_object_code", "mk", "1.0.0", ["mk.boom"]], ["point_of_no_return"],
                ["load", "mk.boom", "brutal_purge", "brutal_purge"]]
"""


def colored(*args: str) -> subprocess.Popen[str]:
    """The CLI with colours forced: text read as markup would come out styled or cut."""
    env = {**os.environ, "FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "2000"}
    env.pop("NO_COLOR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "relhandler.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_markup_in_user_text_prints_literally(tmp_path: Path, nodes: list[NodeProc]) -> None:
    """Paths, module names, error messages and descriptions that look like rich markup reach
    error lines, `status`, `events` and `releases` as typed: no style, no crash, no traceback,
    the documented exit code."""
    from relhandler.handler import store
    from relhandler.release.model import AppSpec, dump_app
    from tests.fixtures.mkroot import App, add_release, record

    boom = f"def boom(*a):\n    raise ValueError({MARKUP!r})\n"
    root = tmp_path / "[bold]x[/bold]" / "r"  # the root's path holds markup too
    v1 = App("mk", "1.0.0", {"mk/__init__.py": "", "mk/boom.py": boom})
    # 2.0.0's new code raises at its top level: a failed install whose error quotes it
    v2 = App("mk", "2.0.0", {"mk/__init__.py": "", "mk/boom.py": f"raise ValueError({MARKUP!r})"})
    r1, r2 = (add_release(root, "mk", a.version, [a]) for a in (v1, v2))
    spec = AppSpec("mk", "1.0.0", v1.modules(), description=MARKUP)
    (root / "lib/mk-1.0.0/app.toml").write_text(dump_app(spec))
    (root / "releases/2.0.0/relup.toml").write_text(MK_RELUP)
    store.write_releases(root, store.Releases((record(r1, "permanent"), record(r2, "unpacked"))))
    store.write_start(root, store.StartFile("1.0.0"))
    nodes.append(start_node(root))
    missing = tmp_path / "[red]t[/]" / "[link=http://e.vil]t.tar.gz"
    rt = ("--root", str(root))
    # independent commands at once: each CLI start costs ~1 s on a loaded machine
    runs = {
        "rpc": (colored("rpc", "mk.boom:boom", json.dumps([MARKUP]), *rt), 1, MARKUP),
        "which": (colored("which", MARKUP, *rt), 1, MARKUP),
        "unpack": (colored("unpack", str(missing), *rt), 2, str(missing)),
        "install": (colored("install", "2.0.0", *rt), 1, MARKUP),
    }
    for what, (proc, code, text) in runs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == code, (what, out, err)
        lines = err.splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (what, err)
        assert text in lines[0], (what, err)  # verbatim: not styled, not cut
    shown = {w: colored(w, *rt) for w in ("status", "events", "releases")}
    res = {w: (p.communicate(timeout=120), p.returncode) for w, p in shown.items()}
    (out, err), code = res["status"]
    assert code == 0 and err == "", err
    assert MARKUP in out  # the application's description
    install = next(x for x in out.splitlines() if x.startswith("install of 2.0.0"))
    assert "rolled_back" in install and MARKUP in install, out
    (out, err), code = res["events"]
    assert code == 0 and err == "", err
    assert f"tarball={missing}" in out and MARKUP in out, out
    assert res["releases"][1] == 0 and "Traceback" not in res["releases"][0][1]
    # the node down: the disk's view and the unreachable error name the root as typed
    nodes[-1].close()
    down = {w: colored(w, *rt) for w in ("releases", "status")}
    (out, err), code = down["releases"].communicate(timeout=120), down["releases"].wait()
    assert code == 0 and f"no node is running at {root};" in err, err
    (out, err), code = down["status"].communicate(timeout=120), down["status"].wait()
    assert code == 3 and len(err.splitlines()) == 1, err
    assert f"no node is running at {root} " in err, err
