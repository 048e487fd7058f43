"""Toolchain scale: build and relup for an app of 500 / 2,000 / 8,000 modules, 25% changed.

    python -m bench.bench_toolchain [--sizes 500,2000,8000]

Prints one JSON line per size and a table: build and relup wall time and peak Python memory
(tracemalloc). Cost should grow about linearly with the module count.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from relhandler.release.build import build
from relhandler.release.plan import open_release, plan_relup

T = TypeVar("T")

PY = """
[project]
name = "big"
version = "{v}"
requires-python = ">=3.11"

[tool.relhandler.release]
applications = ["big"]
"""


def _project(base: Path, vsn: str, n: int, changed: set[int]) -> Path:
    proj = base / f"big-{vsn}"
    pkg = proj / "big"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (proj / "pyproject.toml").write_text(PY.format(v=vsn))
    for i in range(n):
        body = f"def f():\n    return {i}\n"
        if vsn != "1.0.0" and i in changed:
            body += "\n# changed in 2.0.0\n"
        (pkg / f"m{i:05d}.py").write_text(body)
    if vsn != "1.0.0":
        instrs = ",\n".join(f'  ["load_module", "big.m{i:05d}"]' for i in sorted(changed))
        (pkg / "big.appup.toml").write_text(
            f'version = "{vsn}"\n[[up]]\nfrom = "1.0.0"\ninstructions = [\n{instrs}\n]\n'
            f'[[down]]\nto = "1.0.0"\ninstructions = [\n{instrs}\n]\n'
        )
    return proj


def _measure(fn: Callable[[], T]) -> tuple[T, float, float]:
    """Wall time of one run, then peak memory of a second run (tracemalloc slows code ~3×,
    so it must not be on while timing)."""
    t0 = time.perf_counter()
    out = fn()
    ms = (time.perf_counter() - t0) * 1000
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, ms, peak / 1e6


def run(n: int) -> dict[str, Any]:
    changed = set(range(0, n, 4))  # 25%
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        out = base / "out"
        p1 = _project(base, "1.0.0", n, changed)
        p2 = _project(base, "2.0.0", n, changed)
        build(p1, out)  # the base release; the 2.0.0 build is the one measured
        _, b2_ms, b2_mb = _measure(lambda: build(p2, out))
        root = out / "big"

        def relup() -> Any:
            return plan_relup(
                open_release(root=root, version="2.0.0"), [open_release(root=root, version="1.0.0")]
            )

        plan, r_ms, r_mb = _measure(relup)
        assert len(plan.relup.up[0].instructions) == len(changed) + 2
    return {
        "bench": "toolchain",
        "modules": n,
        "changed": len(changed),
        "build_ms": round(b2_ms, 1),
        "build_peak_mb": round(b2_mb, 1),
        "relup_ms": round(r_ms, 1),
        "relup_peak_mb": round(r_mb, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="500,2000,8000")
    a = ap.parse_args()
    rows = [run(int(n)) for n in a.sizes.split(",")]
    for r in rows:
        print(json.dumps(r))
    t = Table("modules", "changed", "build ms", "build peak MB", "relup ms", "relup peak MB")
    for r in rows:
        t.add_row(
            *(
                str(r[k])
                for k in (
                    "modules",
                    "changed",
                    "build_ms",
                    "build_peak_mb",
                    "relup_ms",
                    "relup_peak_mb",
                )
            )
        )
    Console(stderr=True).print(t)


if __name__ == "__main__":
    main()
