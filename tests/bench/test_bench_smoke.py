"""The benchmark harness at tiny sizes: it runs, prints the keys, and loses nothing.
(A benchmark is not a test: no timing is asserted here.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import run

pytestmark = pytest.mark.e2e


def test_call_benchmarks_report_rates(tmp_path: Path) -> None:
    rows = asyncio.run(run._rh_calls(0.1, tmp_path))
    assert {(r["bench"], r["side"], r["clients"]) for r in rows} == {
        ("calls", "relhandler", 1),
        ("calls", "relhandler", 2),
        ("calls", "relhandler-queued", 1),
        ("calls", "relhandler-queued", 2),
        ("casts", "relhandler", 1),
    }
    assert all(r["per_s"] > 0 for r in rows)


def test_live_upgrade_benchmark_row(tmp_path: Path) -> None:
    row = run.rh_upgrade(tmp_path, 50, {})
    for key in (
        "total_ms",
        "suspend_ms",
        "code_change_ms",
        "resume_ms",
        "pause_p50_ms",
        "pause_p99_ms",
        "pause_max_ms",
        "rss_before_mb",
        "rss_after_mb",
    ):
        assert row[key] is not None, key
    assert row["processes_paused"] == 50
    # the load ran through the upgrade and nothing was lost, reordered or dropped
    assert row["calls_during"] > 0 and row["calls_failed"] == 0
    assert row["casts_sent"] > 0 and row["casts_lost"] == 0 and row["casts_reordered"] == 0
    assert row["tcp_pings"] > 0 and row["tcp_dropped"] == 0
    assert row["tcp_answering_v2"] == run.TCP_CONNS


def test_quiet_upgrade_row(tmp_path: Path) -> None:
    row = run.rh_upgrade(tmp_path, 20, {}, load=False)
    assert row["bench"] == "upgrade_quiet"
    assert row["total_ms"] > 0 and row["processes_paused"] == 20


def test_otp_side_when_erlang_is_there(tmp_path: Path, erl: str) -> None:
    rows = run.otp(tmp_path, "upgrade", "100")
    assert rows[0]["n"] == 100
    assert rows[0]["side"] == "otp"


def test_otp_install_release_side(tmp_path: Path, erl: str) -> None:
    rows = run.otp_install_release(tmp_path, 50)
    assert rows[0]["bench"] == "upgrade_rh"
    assert rows[0]["n"] == 50
    assert rows[0]["total_ms"] > 0


def test_tables_fit_an_80_column_log() -> None:
    import io

    from rich.console import Console

    from bench.compare import WIDTH, print_table

    rows = [
        {"bench": "calls", "side": side, "clients": c, "per_s": v, "round": 0}
        for side, v in (("relhandler", 512345.0), ("otp", 734567.0), ("pykka", 17890.0))
        for c in (1, 2)
    ] + [
        {"bench": "upgrade", "side": side, "n": 10000, "total_ms": 1234.5, "calls_failed": 0}
        for side in ("relhandler", "otp")
    ]
    buf = io.StringIO()
    print_table(rows, Console(file=buf, width=WIDTH))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "512,345" in text and "0.70×" in text and "1,234.50" in text
    assert "…" not in text
