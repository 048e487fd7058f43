"""``relhandler verify``: the rehearsal passes on the sample app's 1 → 2 and fails, naming the
phase, the process, the module and the exception, on a 2 that breaks a state on the way up or
does not restore it on the way down. Real tarballs, a real node, real control socket."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import SAMPLE
from tests.fixtures.mkroot import cli

COUNTER_UP = '    return ("ok", {**state, "history": list(extra.get("default_history", []))})\n'
COUNTER_DOWN = '        return ("ok", {"n": state["n"]})\n'
VARIANTS = {
    # one state shape breaks on the way up: a counter that has counted (the boot phase's
    # load made it count) raises
    "bad_up": (
        COUNTER_UP,
        "    if state['n'] > 0:\n"
        '        raise ValueError(f"cannot migrate a used counter: {state!r}")\n' + COUNTER_UP,
    ),
    # the way down loses the count
    "bad_down": (COUNTER_DOWN, '        return ("ok", {"n": 0})\n'),
    # 2.0.0 sends the greeter nothing: it waits in 1.0.0's code, which the downgrade's
    # load of the greeter purges, killing it
    "no_greeter_load": ('load = "sample.greeter:greet_anyone"\n', ""),
    # load through a function, and a health check that fails (on 2.0.0 only)
    "bad_health": (
        'health = ["sample.counter:get"]',
        'health = ["sample.counter:get", "sample.greeter:no_such"]',
    ),
}


def _variant(work: Path, sample_builds: Path, name: str) -> Path:
    """A 2.0.0 whose counter's code_change is broken (``VARIANTS[name]``), with its relup."""
    old, new = VARIANTS[name]
    proj = work / name
    shutil.copytree(SAMPLE / "v2", proj)
    for f in (proj / "src" / "sample" / "counter.py", proj / "pyproject.toml"):
        text = f.read_text()
        if old in text:
            f.write_text(text.replace(old, new))
            break
    else:
        raise AssertionError(f"{old!r} is in neither file")
    out = work / f"rel-{name}"
    cli("build", "--project", str(proj), "--out", str(out), check=True)
    cli(
        "relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "sample"),
        "--from-tarball", str(sample_builds / "sample-1.0.0.tar.gz"), check=True,
    )  # fmt: skip
    return out / "sample-2.0.0.tar.gz"


@pytest.fixture(scope="module")
def broken(sample_builds: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("verify")
    return {name: _variant(work, sample_builds, name) for name in ("bad_up", "bad_down")}


def _verify(old: Path, new: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    r = cli("verify", "--from", str(old), "--to", str(new), "--duration", "0.3", *extra)
    return r.returncode, (json.loads(r.stdout) if "--json" in extra else {}), r.stdout + r.stderr


def test_verify_passes_on_the_sample_and_prints_its_table(sample_builds: Path) -> None:
    r = cli(
        "verify", "--from", str(sample_builds / "sample-1.0.0.tar.gz"),
        "--to", str(sample_builds / "sample-2.0.0.tar.gz"), "--duration", "0.3",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    for word in ("phase", "boot", "upgrade", "downgrade", "upgrade-again", "round-tripped"):
        assert word in r.stdout
    assert "verify passed: 1.0.0 → 2.0.0 → 1.0.0 → 2.0.0" in r.stdout
    # not a TTY: plain progress lines, one per step
    assert "upgrade: installing 2.0.0" in r.stderr
    assert "downgrade: 1 states round-tripped, 0 did not" in r.stderr


@pytest.mark.slow
def test_verify_json_reports_every_phase(sample_builds: Path) -> None:
    code, rep, out = _verify(
        sample_builds / "sample-1.0.0.tar.gz", sample_builds / "sample-2.0.0.tar.gz", "--json"
    )
    assert code == 0, out
    assert rep["ok"] is True and rep["failures"] == []
    phases = {p["name"]: p for p in rep["phases"]}  # type: ignore[attr-defined]
    assert list(phases) == ["boot", "upgrade", "downgrade", "upgrade-again"]
    for p in phases.values():
        assert p["calls"] > 0 and p["failed"] == 0 and p["max_latency_ms"] > 0
    for name in ("upgrade", "downgrade", "upgrade-again"):
        assert phases[name]["migrated"] >= 1 and phases[name]["suspended_ms"] > 0
        assert phases[name]["health_passed"] == 1
    assert phases["downgrade"]["roundtrip_ok"] == 1
    # the node's own events, by phase (log/events.jsonl)
    assert phases["boot"]["events"]["node.start"] == 1
    for name in ("upgrade", "downgrade", "upgrade-again"):
        assert phases[name]["events"]["install.end"] == 1
        # its health checks ran through the node's health op: confirm-or-revert's events
        assert phases[name]["events"]["health"] == 1
    [row] = rep["roundtrip"]  # type: ignore[misc]
    assert (row["module"], row["result"]) == ("sample.counter", "ok")


def test_verify_fails_on_a_code_change_that_breaks_a_state(
    sample_builds: Path, broken: dict[str, Path]
) -> None:
    code, rep, out = _verify(sample_builds / "sample-1.0.0.tar.gz", broken["bad_up"], "--json")
    assert code == 1, out
    [f] = rep["failures"]  # type: ignore[misc]
    assert (f["phase"], f["what"], f["module"]) == ("upgrade", "install", "sample.counter")
    assert (
        f["process"].startswith("<") and "ValueError: cannot migrate a used counter" in (f["error"])
    )
    assert [p["name"] for p in rep["phases"]] == ["boot", "upgrade"]  # type: ignore[attr-defined]


def test_verify_fails_when_down_does_not_restore_the_state(
    sample_builds: Path, broken: dict[str, Path]
) -> None:
    r = cli(
        "verify", "--from", str(sample_builds / "sample-1.0.0.tar.gz"),
        "--to", str(broken["bad_down"]), "--duration", "0.3",
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert lines, r.stderr
    assert "phase downgrade: roundtrip failed in process <" in lines[0]
    assert "(module sample.counter): down(up(state)) != state" in lines[0]
    assert "round-tripped" in r.stdout and "0/1" in r.stdout


def test_verify_refuses_a_missing_tarball(tmp_path: Path) -> None:
    r = cli("verify", "--from", str(tmp_path / "a.tar.gz"), "--to", str(tmp_path / "b.tar.gz"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--from" in r.stderr and "no such file" in r.stderr


@pytest.mark.slow
def test_sigterm_stops_the_rehearsal_node(sample_builds: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "rehearsal"
    p = subprocess.Popen(
        [
            sys.executable, "-m", "relhandler.cli", "verify",
            "--from", str(sample_builds / "sample-1.0.0.tar.gz"),
            "--to", str(sample_builds / "sample-2.0.0.tar.gz"),
            "--duration", "30", "--keep-root", str(root),
        ],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (root / "run" / "node.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        node_pid = int((root / "run" / "node.pid").read_text())
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert "interrupted: the rehearsal node was stopped" in err
    assert not (root / "run" / "node.sock").exists()
    stat = Path(f"/proc/{node_pid}/stat")
    # gone, or a zombie nobody reaps (a container's init may not)
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.slow
def test_verify_fails_on_a_health_check(sample_builds: Path, tmp_path: Path) -> None:
    new = _variant(tmp_path, sample_builds, "bad_health")
    code, rep, out = _verify(sample_builds / "sample-1.0.0.tar.gz", new, "--json")
    assert code == 1, out
    assert rep["hooks"]["2.0.0"]["load"] == "sample.greeter:greet_anyone"  # type: ignore[index]
    health = [f for f in rep["failures"] if f["what"] == "health"]  # type: ignore[attr-defined]
    # 2.0.0's health checks run after each upgrade; 1.0.0 declares its own (they pass)
    assert [f["phase"] for f in health] == ["upgrade", "upgrade-again"]
    assert health[0]["process"] == "sample.greeter:no_such"
    assert health[0]["module"] == "sample.greeter" and "no_such" in health[0]["error"]
    phases = {p["name"]: p for p in rep["phases"]}  # type: ignore[attr-defined]
    assert phases["upgrade"]["health_passed"] == 1 and phases["upgrade"]["health_failed"] == 1
    assert phases["downgrade"]["health_failed"] == 0
    assert phases["upgrade-again"]["calls"] > 0 and phases["upgrade-again"]["failed"] == 0


@pytest.mark.slow
def test_verify_refuses_the_same_release_twice(sample_builds: Path) -> None:
    tar = str(sample_builds / "sample-1.0.0.tar.gz")
    r = cli("verify", "--from", tar, "--to", tar, "--duration", "0")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--from and --to are both release 1.0.0" in r.stderr


@pytest.mark.slow
def test_verify_fails_on_a_process_the_upgrade_kills(sample_builds: Path, tmp_path: Path) -> None:
    """A process exit the node logs (its event log) fails the rehearsal, even when every
    hook succeeds."""
    new = _variant(tmp_path, sample_builds, "no_greeter_load")
    code, rep, out = _verify(sample_builds / "sample-1.0.0.tar.gz", new, "--json")
    assert code == 1, out
    [f] = rep["failures"]  # type: ignore[misc]
    assert (f["phase"], f["what"], f["error"]) == ("downgrade", "exit", "exited with 'killed'")
    assert f["process"].endswith("(greeter)")
    assert "(greeter) (initial call _run) exited with 'killed'" in out
