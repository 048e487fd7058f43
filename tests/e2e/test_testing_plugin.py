"""``relhandler.testing`` used as a user would: a project's own test files, run by plain
``pytest`` in a subprocess, the plugin loaded through its ``pytest11`` entry point (no
conftest, no import of the fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

V2_COUNTER = '''
"""Version 2 of a counter: notes are kept in a list now, and the way down forgets them."""


def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        return ("ok", {"n": state["n"]})  # BUG: a v1 state's "note" is lost
    notes = [state["note"]] if "note" in state else []
    return ("ok", {"n": state["n"], "notes": notes})
'''

USER_TEST = """
from hypothesis import strategies as st

import counter
import counter_fixed
from relhandler.testing import assert_code_change_roundtrip

# the shapes a v1 counter's state takes: a count, and sometimes a note
v1_states = st.fixed_dictionaries({"n": st.integers(min_value=0)}, optional={"note": st.text()})


def test_counter_round_trips():
    assert_code_change_roundtrip(counter, v1_states, from_vsn="1")


def test_fixed_counter_round_trips():
    assert_code_change_roundtrip(counter_fixed, v1_states, from_vsn="1")
"""
FIXED = V2_COUNTER.replace(
    'return ("ok", {"n": state["n"]})  # BUG: a v1 state\'s "note" is lost',
    'return ("ok", {"n": state["n"], **({"note": state["notes"][0]} if state["notes"] else {})})',
)


def _pytest(
    proj: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _project(tmp_path: Path, counter: str, test: str) -> Path:
    proj = tmp_path / "proj"
    (proj / "tests").mkdir(parents=True)
    (proj / "pytest.ini").write_text("[pytest]\npythonpath = .\ntestpaths = tests\n")
    (proj / "counter.py").write_text(textwrap.dedent(counter))
    (proj / "tests" / "test_upgrade.py").write_text(textwrap.dedent(test))
    return proj


def test_a_hypothesis_strategy_finds_a_code_change_that_drops_a_key(tmp_path: Path) -> None:
    assert FIXED != V2_COUNTER
    proj = _project(tmp_path, V2_COUNTER, USER_TEST)
    (proj / "counter_fixed.py").write_text(textwrap.dedent(FIXED))
    r = _pytest(proj)
    assert r.returncode == 1, r.stdout + r.stderr
    # the buggy code_change fails, the fixed one passes over the same strategy
    assert "1 failed, 1 passed" in r.stdout, r.stdout
    assert "FAILED tests/test_upgrade.py::test_counter_round_trips" in r.stdout
    # the first failing state, shrunk: the smallest v1 state that has a note
    assert (
        "RoundtripError: counter: code_change up then down does not give back the state: "
        "{'n': 0, 'note': ''} → up {'n': 0, 'notes': ['']} → down {'n': 0}; lost keys ['note']"
    ) in r.stdout, r.stdout


NODE_TEST = """
import os


def test_counter_survives_upgrade_and_downgrade(relhandler_node):
    node = relhandler_node(os.environ["OLD_TARBALL"])
    assert node.version == "1.0.0"
    node.call("counter", "incr")
    node.call("counter", "incr")
    assert node.state("counter") == {"n": 2}
    res = node.upgrade(os.environ["NEW_TARBALL"])
    assert res["touched"]["sample.counter"] == 1
    assert node.state("counter") == {"n": 2, "history": []}
    assert isinstance(node.rpc("sample.counter", "describe"), str)
    node.downgrade("1.0.0")
    assert node.state("counter") == {"n": 2}
    assert {r["version"]: r["status"] for r in node.releases()}["1.0.0"] == "permanent"
"""


def test_the_node_fixture_boots_upgrades_and_reads_state(
    tmp_path: Path, sample_builds: Path
) -> None:
    proj = _project(tmp_path, "", NODE_TEST)
    before = set(Path(tempfile.gettempdir()).glob("rh-test-*"))
    r = _pytest(
        proj,
        env={
            "OLD_TARBALL": str(sample_builds / "sample-1.0.0.tar.gz"),
            "NEW_TARBALL": str(sample_builds / "sample-2.0.0.tar.gz"),
        },
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    # the node was stopped and its temporary root removed
    assert set(Path(tempfile.gettempdir()).glob("rh-test-*")) <= before


@pytest.mark.parametrize("mod", ["relhandler.testing"])
def test_the_plugin_import_is_cheap(mod: str) -> None:
    code = (
        "import sys, pytest; before = set(sys.modules); import " + mod + "; "
        "print(sorted(m for m in set(sys.modules) - before))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['relhandler', 'relhandler.testing']"


def test_the_template_tests_pass_with_the_plugin(tmp_path: Path) -> None:
    """`relhandler new` ships a round-trip test; the generated project's tests pass."""
    from tests.fixtures.mkroot import cli

    cli("new", "shop", "--dir", str(tmp_path / "shop"), check=True)
    test = (tmp_path / "shop" / "tests" / "test_server.py").read_text()
    assert "assert_code_change_roundtrip(server" in test
    r = _pytest(tmp_path / "shop")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed" in r.stdout
