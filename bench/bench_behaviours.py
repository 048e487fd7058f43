"""gen_statem and gen_event next to gen_server, in one in-process node.

    python -m bench.bench_behaviours [--sizes 1000,10000] [--seconds 1]

Prints one JSON line per measurement and a table: call round trips and casts per second
(gen_statem against gen_server with every call queued, the path a gen_statem call always
takes), notifies per second through a manager with one handler, and the sys batch upgrade
(suspend_many, load, change_code_many, resume_many) of N machines against N servers, with
the collector off as the release handler keeps it during an install.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from relhandler.runtime import Node, gen_event, gen_server, gen_statem, sys

SERVER = """
__vsn__ = "{v}"
def init(a):
    return ("ok", {{"n": 0}})
def handle_call(r, f, s):
    return ("reply", s["n"], s)
def handle_cast(m, s):
    return ("noreply", {{"n": s["n"] + 1}})
def code_change(old, s, extra):
    return ("ok", {{**s, "v": {v}}})
"""

MACHINE = """
__vsn__ = "{v}"
def callback_mode():
    return "handle_event_function"
def init(a):
    return ("ok", "s", {{"n": 0}})
def handle_event(t, c, state, d):
    if t == "cast":
        return ("keep_state", {{"n": d["n"] + 1}})
    return ("keep_state_and_data", [("reply", t[1], d["n"])])
def code_change(old, state, d, extra):
    return ("ok", state, {{**d, "v": {v}}})
"""

HANDLER = """
def init(a):
    return ("ok", 0)
def handle_event(e, s):
    return ("ok", s + 1)
"""


async def _rate(fn: Any, seconds: float) -> float:
    n = 0
    end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        for _ in range(100):
            await fn()
        n += 100
    return n / (time.perf_counter() - t0)


async def calls(code: Path, seconds: float) -> list[dict[str, Any]]:
    (code / "bb_srv.py").write_text(SERVER.format(v=0))
    (code / "bb_sm.py").write_text(MACHINE.format(v=0))
    (code / "bb_h.py").write_text(HANDLER)
    rows = []
    async with Node() as node:
        node.code.set_path([code])
        node.inline_calls = False
        srv = await gen_server.start("bb_srv")
        sm = await gen_statem.start("bb_sm")
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, "bb_h")
        for name, fn in (
            ("gen_server call (queued)", lambda: gen_server.call(srv, "x")),
            ("gen_statem call", lambda: gen_statem.call(sm, "x")),
            ("gen_event sync_notify", lambda: gen_event.sync_notify(mgr, "x")),
        ):
            rows.append({"bench": name, "per_s": round(await _rate(fn, seconds))})
        for name, cast, pid in (
            ("gen_server cast", gen_server.cast, srv),
            ("gen_statem cast", gen_statem.cast, sm),
            ("gen_event notify", gen_event.notify, mgr),
        ):
            n = 200_000
            t0 = time.perf_counter()
            for _ in range(n):
                cast(pid, "x")
            p = node.processes[pid]
            while p.mailbox or p._waiter is None:
                await asyncio.sleep(0)
            rows.append({"bench": name, "per_s": round(n / (time.perf_counter() - t0))})
    return rows


async def upgrade(code: Path, kind: str, n: int) -> dict[str, Any]:
    mod, src = ("bb_srv", SERVER) if kind == "gen_server" else ("bb_sm", MACHINE)
    (code / f"{mod}.py").write_text(src.format(v=0))
    start = gen_server.start if kind == "gen_server" else gen_statem.start
    async with Node() as node:
        node.code.set_path([code])
        pids = [await start(mod) for _ in range(n)]
        (code / f"{mod}.py").write_text(src.format(v=1))
        gc.collect()
        gc.disable()  # as the release handler keeps it off for the whole install
        t0 = time.perf_counter()
        r = await sys.suspend_many(pids)
        t1 = time.perf_counter()
        node.code.load_prepared(node.code.prepare(mod))
        t2 = time.perf_counter()
        errs = await sys.change_code_many(pids, mod, "0", None)
        t3 = time.perf_counter()
        sys.resume_many(pids)
        t4 = time.perf_counter()
        gc.enable()
        assert len(r.suspended) == n, r.skipped
        assert errs == [], errs
        return {
            "bench": f"upgrade {kind}",
            "n": n,
            "suspend_ms": round((t1 - t0) * 1000, 2),
            "load_ms": round((t2 - t1) * 1000, 2),
            "code_change_ms": round((t3 - t2) * 1000, 2),
            "resume_ms": round((t4 - t3) * 1000, 2),
            "pause_ms": round((t4 - t0) * 1000, 2),
        }


async def main(sizes: list[int], seconds: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        rows += await calls(Path(d), seconds)
        for n in sizes:
            for kind in ("gen_server", "gen_statem"):
                with tempfile.TemporaryDirectory() as d2:
                    rows.append(await upgrade(Path(d2), kind, n))
    return rows


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--seconds", type=float, default=1.0)
    a = ap.parse_args()
    rows = asyncio.run(main([int(x) for x in a.sizes.split(",")], a.seconds))
    for r in rows:
        print(json.dumps(r))
    t = Table("bench", "n", "per s", "suspend", "load", "code_change", "resume", "pause ms")
    for r in rows:
        t.add_row(
            r["bench"],
            str(r.get("n", "")),
            f"{r['per_s']:,}" if "per_s" in r else "",
            *(str(r.get(k, "")) for k in ("suspend_ms", "load_ms", "code_change_ms")),
            str(r.get("resume_ms", "")),
            str(r.get("pause_ms", "")),
        )
    Console().print(t)


if __name__ == "__main__":
    cli()
