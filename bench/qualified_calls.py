"""Cost of a call through each kind of reference (docs/references.md), in one process.

    .venv/bin/python -m bench.qualified_calls [--calls N]

Measures, per call, a local call ``f(i)``, a qualified call ``m.f(i)`` through a
module-level ``import m`` (relinked at each load), a ``from m import f`` name, and a call
through the ``node.code.live(m)`` handle that code outside the release uses.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from relhandler.runtime import Node

SRC = """
import qbench_m


def f(x):
    return x


from qbench_m import f as imported  # noqa: E402  (after f exists, as a normal import needs)


def local(n):
    for i in range(n):
        f(i)


def qualified(n):
    for i in range(n):
        qbench_m.f(i)


def from_import(n):
    for i in range(n):
        imported(i)


def through(handle, n):
    for i in range(n):
        handle.f(i)
"""


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "qbench_m.py").write_text(SRC)
        async with Node() as node:
            node.code.set_path([d])
            m = node.code.current("qbench_m")
            handle = node.code.live("qbench_m")
            runs = {
                "local f(i)": lambda: m.local(calls),
                "qualified m.f(i)": lambda: m.qualified(calls),
                "from m import f; f(i)": lambda: m.from_import(calls),
                "live handle h.f(i)": lambda: m.through(handle, calls),
            }
            for name, run in runs.items():
                best = min(_timed(run) for _ in range(5))
                print(f"{name:24} {best / calls * 1e9:7.0f} ns/call")


def _timed(run: object) -> float:
    t = time.perf_counter()
    run()  # type: ignore[operator]
    return time.perf_counter() - t


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1_000_000)
    asyncio.run(main(ap.parse_args().calls))
