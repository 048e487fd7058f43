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


WIDTH = 80  # every table fits an 80-column CI log

SIDES = (
    ("relhandler-queued", "relhandler, queued calls"),
    ("otp", "Erlang/OTP"),
    ("pykka", "Pykka"),
    ("asyncio", "bare asyncio ceiling"),
)
UPGRADE_EXTRA = (
    "calls_during",
    "calls_failed",
    "call_p_max_before_ms",
    "call_max_during_ms",
    "casts_lost",
    "casts_reordered",
    "tcp_dropped",
    "tcp_max_ms",
    "rss_after_mb",
)


def print_table(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    """The medians and ratios as narrow tables (one row per side or metric), on stdout."""
    med = medians(rows)
    con = console or Console(width=WIDTH)
    for bench in ("calls", "casts"):
        for clients in (1, 2):
            rh = med.get((bench, "relhandler", clients), {}).get("per_s")
            if rh is None:
                continue
            t = Table(title=f"{bench}, {clients} client(s): per second (median)")
            t.add_column("side")
            t.add_column("per s", justify="right")
            t.add_column("relhandler / side", justify="right")
            t.add_row("relhandler", f"{rh:,.0f}", "1.00×")
            for side, label in SIDES:
                v = med.get((bench, side, clients), {}).get("per_s")
                if v is not None:
                    t.add_row(label, _f(v), _r(rh, v))
            con.print(t)
    for n in sorted({k[2] for k in med if k[0] == "upgrade"}):
        u = Table(title=f"live upgrade of {n:,} GenServers under load (median)")
        u.add_column("metric (ms unless named)")
        u.add_column("relhandler", justify="right")
        u.add_column("OTP", justify="right")
        u.add_column("rh/OTP", justify="right")
        for m in (*UPGRADE_KEYS, *UPGRADE_EXTRA):
            rh = med.get(("upgrade", "relhandler", n), {}).get(m)
            o = med.get(("upgrade", "otp", n), {}).get(m)
            u.add_row(m, _f(rh, 2), _f(o, 2), _r(rh, o))
        rh = med.get(("upgrade_quiet", "relhandler", n), {}).get("total_ms")
        o = med.get(("upgrade_rh", "otp", n), {}).get("total_ms")
        u.add_row("quiet: total vs install_release", _f(rh, 2), _f(o, 2), _r(rh, o))
        con.print(u)


def _f(v: float | None, d: int = 0) -> str:
    return "—" if v is None else f"{v:,.{d}f}"


def _r(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    print_table(data["rows"])
