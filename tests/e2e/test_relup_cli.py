"""relup, appup generate and check on real builds (issue: appups and relups)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from relhandler.release.relup import dump_relup, parse_relup, read_relup
from tests.fixtures.mkroot import cli

pytestmark = pytest.mark.e2e

PY = """
[project]
name = "rel"
version = "{v}"
requires-python = ">=3.11"

[tool.relhandler.release]
name = "rel"
applications = {apps}
"""

SERVER_V1 = """
def init(a): return ("ok", 0)
def handle_call(r, f, s): return ("reply", s, s)
def handle_cast(m, s): return ("noreply", s)
def code_change(old, s, extra): return ("ok", s)
"""


def j(*args: str) -> Any:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def project(base: Path, vsn: str, files: dict[str, str], apps: list[str]) -> Path:
    proj = base / f"p{vsn}"
    if proj.exists():
        shutil.rmtree(proj)
    for rel, src in files.items():
        p = proj / "src" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src))
    tables = "".join(f'\n[tool.relhandler.apps.{a}]\npath = "src/{a}"\n' for a in apps)
    (proj / "pyproject.toml").write_text(PY.format(v=vsn, apps=json.dumps(apps)) + tables)
    return proj


V1 = {
    "core/__init__.py": "",
    "core/server.py": SERVER_V1,
    "core/util.py": "def f(): return 1\n",
    "core/old.py": "def g(): return 0\n",
}
V2 = {
    "core/__init__.py": "",
    "core/server.py": SERVER_V1.replace('return ("ok", s)', 'return ("ok", s + 1)'),
    "core/util.py": "def f(): return 2\n",
    "core/fresh.py": "import core.util\n\ndef h(): return core.util.f()\n",
    "extra/__init__.py": "",
    "extra/api.py": "def hello(): return 'hi'\n",
}
APPUP_HAND = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [
  ["add_module", "core.fresh", { dep_mods = ["core.util"] }],
  ["update", "core.server", { change = "advanced", extra = [] }],
  ["load_module", "core.util"],
  ["delete_module", "core.old"],
]

[[down]]
to = "1.0.0"
instructions = [
  ["add_module", "core.old"],
  ["update", "core.server", { change = "advanced", extra = [] }],
  ["load_module", "core.util"],
  ["delete_module", "core.fresh", { dep_mods = ["core.util"] }],
]
"""

EXPECTED_UP = [
    ["load_object_code", "extra", "2.0.0", ["extra", "extra.api"]],
    ["load_object_code", "core", "2.0.0", ["core.fresh", "core.util", "core.server"]],
    ["point_of_no_return"],
    ["load", "extra", "brutal_purge", "brutal_purge"],
    ["load", "extra.api", "brutal_purge", "brutal_purge"],
    ["apply", "application", "start", ["extra", "permanent"]],
    ["load", "core.util", "brutal_purge", "brutal_purge"],
    ["load", "core.fresh", "brutal_purge", "brutal_purge"],
    ["suspend", ["core.server"]],
    ["load", "core.server", "brutal_purge", "brutal_purge"],
    ["code_change", "up", [["core.server", []]]],
    ["resume", ["core.server"]],
    ["remove", "core.old", "brutal_purge", "brutal_purge"],
    ["purge", ["core.old"]],
]


def build_pair(tmp_path: Path, appup: str) -> Path:
    out = tmp_path / "out"
    j("build", "--project", str(project(tmp_path, "1.0.0", V1, ["core"])), "--out", str(out))
    files = {**V2, "core/core.appup.toml": appup}
    j(
        "build",
        "--project",
        str(project(tmp_path, "2.0.0", files, ["core", "extra"])),
        "--out",
        str(out),
    )
    return out


def test_relup_on_real_builds_exact_round_trip_and_reproducible(tmp_path: Path) -> None:
    out = build_pair(tmp_path, APPUP_HAND)
    rel = str(out / "rel")
    res = j("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", rel)
    assert res["up"]["1.0.0"] == EXPECTED_UP
    down = res["down"]["1.0.0"]
    assert down[:2] == [
        ["load_object_code", "core", "1.0.0", ["core.old", "core.server", "core.util"]],
        ["point_of_no_return"],
    ]
    assert ["apply", "application", "stop", ["extra"]] in down
    path = out / "rel" / "releases" / "2.0.0" / "relup.toml"
    r1 = read_relup(path)
    import tomllib

    assert parse_relup(tomllib.loads(dump_relup(r1))) == r1
    tar = out / "rel-2.0.0.tar.gz"
    first = tar.read_bytes()
    j("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", rel)
    assert tar.read_bytes() == first  # same inputs, same bytes
    import tarfile

    with tarfile.open(tar) as t:
        assert "releases/2.0.0/relup.toml" in t.getnames()
    # a relup against the old release's *tarball* (the CI path) gives the same relup
    other = tmp_path / "elsewhere"
    shutil.copytree(out / "rel", other)
    shutil.rmtree(other / "releases" / "1.0.0")
    res2 = j(
        "relup",
        "--to",
        "2.0.0",
        "--from",
        "1.0.0",
        "--rel-dir",
        str(other),
        "--from-tarball",
        str(out / "rel-1.0.0.tar.gz"),
    )
    assert res2["up"] == res["up"]


def test_generated_appup_gives_the_hand_written_relup(tmp_path: Path) -> None:
    out = build_pair(tmp_path, APPUP_HAND)
    rel = str(out / "rel")
    hand = j("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", rel)
    gen = j(
        "appup", "generate", "--from", "1.0.0", "--to", "2.0.0", "--app", "core", "--rel-dir", rel
    )["core"]
    out2 = build_pair(tmp_path / "g", gen)
    res = j("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out2 / "rel"))
    assert res["up"] == hand["up"]
    assert res["down"] == hand["down"]
    assert (
        j("check", "--vsn", "2.0.0", "--rel-dir", str(out2 / "rel"), "--strict")["problems"] == []
    )


def test_no_appup_entry_for_the_old_version(tmp_path: Path) -> None:
    out = build_pair(tmp_path, APPUP_HAND.replace('from = "1.0.0"', 'from = "0.9.0"'))
    r = cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "rel"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert "no [[up]] entry matches core 1.0.0" in r.stderr


def test_check_reports_uncovered_changes(tmp_path: Path) -> None:
    partial = APPUP_HAND.replace('  ["load_module", "core.util"],\n', "")
    out = build_pair(
        tmp_path,
        partial.replace(
            '["add_module", "core.fresh", { dep_mods = ["core.util"] }]',
            '["add_module", "core.fresh"]',
        ).replace(
            '["delete_module", "core.fresh", { dep_mods = ["core.util"] }]',
            '["delete_module", "core.fresh"]',
        ),
    )
    rel = str(out / "rel")
    j("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", rel)
    r = cli("check", "--vsn", "2.0.0", "--rel-dir", rel, "--strict", "--json")
    assert r.returncode == 1
    assert any("core.util" in p for p in json.loads(r.stdout)["problems"])
    assert cli("check", "--vsn", "2.0.0", "--rel-dir", rel).returncode == 0  # a warning only


def test_check_a_tarball(tmp_path: Path) -> None:
    out = build_pair(tmp_path, APPUP_HAND)
    j("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "rel"))
    res = j("check", str(out / "rel-2.0.0.tar.gz"))
    assert res["problems"] == []
    assert res["relup"]["up"]["1.0.0"] == EXPECTED_UP
    assert any("coverage not checked" in w for w in res["warnings"])
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes((out / "rel-2.0.0.tar.gz").read_bytes()[:100])
    r = cli("check", str(bad))
    assert r.returncode == 2


def test_check_strict_refuses_a_declared_upgrade_path_without_relup(tmp_path: Path) -> None:
    # the appup declares 1.0.0 → 2.0.0 and release 1.0.0 is in the root, but no relup
    out = build_pair(tmp_path, APPUP_HAND)
    rel = str(out / "rel")
    r = cli("check", "--vsn", "2.0.0", "--rel-dir", rel, "--strict", "--json")
    assert r.returncode == 1
    problems = json.loads(r.stdout)["problems"]
    assert any(
        "declares an upgrade from 1.0.0" in p and "no entry up from 1.0.0" in p for p in problems
    )
    assert cli("check", "--vsn", "2.0.0", "--rel-dir", rel).returncode == 0  # a warning only
    r = cli("check", "--vsn", "2.0.0", "--rel-dir", rel, "--strict", "--from", "1.0.0", "--json")
    assert r.returncode == 1
    assert any("no relup from 1.0.0" in p for p in json.loads(r.stdout)["problems"])
    j("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", rel)
    assert (
        j("check", "--vsn", "2.0.0", "--rel-dir", rel, "--strict", "--from", "1.0.0")["problems"]
        == []
    )


def test_check_strict_refuses_a_changed_module_its_appup_misses(tmp_path: Path) -> None:
    # a relup written before core.util changed again: the appup misses it, the relup too
    partial = APPUP_HAND.replace('  ["load_module", "core.util"],\n', "", 1)
    out = build_pair(
        tmp_path,
        partial.replace(
            '["add_module", "core.fresh", { dep_mods = ["core.util"] }]',
            '["add_module", "core.fresh"]',
        ),
    )
    rel = str(out / "rel")
    j("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", rel)
    r = cli("check", "--vsn", "2.0.0", "--rel-dir", rel, "--strict", "--json")
    assert r.returncode == 1
    problems = json.loads(r.stdout)["problems"]
    assert any(
        "'core.util' changed but the appup's [[up]] entry for 1.0.0 has no instruction" in p
        for p in problems
    )


def test_a_dep_mods_cycle_is_translated_and_check_warns(tmp_path: Path) -> None:
    # OTP emits an order for a cycle (releases.md): so do we, and `check` says so
    cyclic = APPUP_HAND.replace(
        '["load_module", "core.util"],\n  ["delete_module", "core.old"],',
        '["load_module", "core.util", { dep_mods = ["core.fresh"] }],\n'
        '  ["delete_module", "core.old"],',
    )
    assert cyclic != APPUP_HAND
    out = build_pair(tmp_path, cyclic)
    rel = str(out / "rel")
    r = cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", rel)
    assert r.returncode == 0, r.stderr
    r = cli("check", "--vsn", "2.0.0", "--rel-dir", rel, "--json")
    assert r.returncode == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    assert any("dep_mods form a cycle" in w and "core.fresh → core.util" in w for w in warnings), (
        warnings
    )
