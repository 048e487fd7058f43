"""Medians and ratios of benchmark rows, side by side.

python -m bench.compare bench/results/<stamp>.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["medians", "print_table"]

UPGRADE_KEYS = (
    "total_ms",
    "suspend_ms",
    "load_ms",
    "code_change_ms",
    "resume_ms",
    "pause_p50_ms",
    "pause_p99_ms",
    "pause_max_ms",
)


def medians(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, float]]:
    """(bench, side, clients-or-n) → {metric: median}."""
    groups: dict[tuple[str, str, int], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        key = (r["bench"], r["side"], int(r.get("clients", r.get("n", 0))))
        for k, v in r.items():
            if (
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and k not in ("clients", "n", "round")
            ):
                groups[key][k].append(float(v))
    return {k: {m: statistics.median(v) for m, v in d.items()} for k, d in groups.items()}


def print_table(rows: list[dict[str, Any]]) -> None:
    med = medians(rows)
    con = Console(stderr=True)
    t = Table(title="call throughput (per second, median)")
    for c in (
        "bench",
        "clients",
        "relhandler",
        "queued",
        "OTP",
        "rh/OTP",
        "pykka",
        "rh/pykka",
        "asyncio ceiling",
        "rh/asyncio",
    ):
        t.add_column(c, justify="right")
    for bench in ("calls", "casts"):
        for clients in (1, 2):
            rh = med.get((bench, "relhandler", clients), {}).get("per_s")
            if rh is None:
                continue
            o = med.get((bench, "otp", clients), {}).get("per_s")
            p = med.get((bench, "pykka", clients), {}).get("per_s")
            a = med.get((bench, "asyncio", clients), {}).get("per_s")
            q = med.get((bench, "relhandler-queued", clients), {}).get("per_s")
            t.add_row(
                bench,
                str(clients),
                f"{rh:,.0f}",
                _f(q),
                _f(o),
                _r(rh, o),
                _f(p),
                _r(rh, p),
                _f(a),
                _r(rh, a),
            )
    con.print(t)
    u = Table(title="live upgrade of N GenServers (ms, median)")
    u.add_column("metric")
    sizes = sorted({k[2] for k in med if k[0] == "upgrade"})
    for n in sizes:
        u.add_column(f"rh N={n}", justify="right")
        u.add_column(f"OTP N={n}", justify="right")
        u.add_column("rh/OTP", justify="right")
    for m in (
        *UPGRADE_KEYS,
        "calls_during",
        "calls_failed",
        "call_p_max_before_ms",
        "call_max_during_ms",
        "casts_lost",
        "casts_reordered",
        "tcp_dropped",
        "tcp_max_ms",
        "rss_after_mb",
    ):
        cells = []
        for n in sizes:
            rh = med.get(("upgrade", "relhandler", n), {}).get(m)
            o = med.get(("upgrade", "otp", n), {}).get(m)
            cells += [_f(rh, 2), _f(o, 2), _r(rh, o)]
        u.add_row(m, *cells)
    cells = []
    for n in sizes:
        rh = med.get(("upgrade_quiet", "relhandler", n), {}).get("total_ms")
        o = med.get(("upgrade_rh", "otp", n), {}).get("total_ms")
        cells += [_f(rh, 2), _f(o, 2), _r(rh, o)]
    u.add_row("quiet node: total_ms vs OTP install_release", *cells)
    con.print(u)


def _f(v: float | None, d: int = 0) -> str:
    return "—" if v is None else f"{v:,.{d}f}"


def _r(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    print_table(data["rows"])
