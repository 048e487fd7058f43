"""Side-by-side benchmarks: relhandler vs Erlang/OTP (and Pykka, and bare asyncio).

    python -m bench.run [--quick] [--rounds R] [--sizes 1000,10000]

Both sides run in this one invocation, alternating, ``R`` rounds; medians and ratios are
printed as a table and every row is written to ``bench/results/<stamp>.json``. Numbers on
these shared 2-core machines are noisy: read the ratios, not the absolute values.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.compare import print_table
from bench.fleet import build_fleet

HERE = Path(__file__).resolve().parent

SERVER = """
def init(a):
    return ("ok", 0)

def handle_call(req, from_, s):
    return ("reply", "pong", s)

def handle_cast(m, s):
    return ("noreply", s + 1)
"""


# -- OTP -------------------------------------------------------------------------------------
def _ebin(work: Path) -> Path:
    """bench/otp compiled (once per run)."""
    ebin = work / "otp_ebin"
    if not ebin.exists():
        ebin.mkdir()
        subprocess.run(
            ["erlc", "-o", str(ebin), *map(str, (HERE / "otp").glob("*.erl"))], check=True
        )
    return ebin


def otp(work: Path, *args: str) -> list[dict[str, Any]]:
    ebin = _ebin(work)
    r = subprocess.run(
        ["erl", "-noshell", "+P", "2000000", "-pa", str(ebin), "-run", "bench_otp", "main", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def otp_install_release(work: Path, n: int) -> list[dict[str, Any]]:
    """OTP's own ``release_handler:install_release`` with a relup from
    ``systools:make_relup`` (bench/otp/bench_rh.erl)."""
    ebin = _ebin(work)
    root = work / f"otp-root-{n}"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(
        [
            "erl",
            "-noshell",
            "-pa",
            str(ebin),
            "-run",
            "bench_rh",
            "prepare",
            str(root),
            str(n),
            str(HERE / "otp"),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    r = subprocess.run(
        [
            "erl",
            "-noshell",
            "+P",
            "2000000",
            "-boot",
            "start_sasl",
            "-sasl",
            "releases_dir",
            f'"{root}/releases"',
            "-pa",
            str(root / "lib" / "bench-1" / "ebin"),
            "-pa",
            str(ebin),
            "-run",
            "bench_rh",
            "run",
            str(root),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    shutil.rmtree(root, ignore_errors=True)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


# -- relhandler, in process ----------------------------------------------------------------------
async def _rh_calls(seconds: float, work: Path) -> list[dict[str, Any]]:
    from relhandler.runtime import Node, gen_server

    code = work / "callcode"
    code.mkdir(exist_ok=True)
    (code / "bench_srv.py").write_text(SERVER)
    rows = []
    async with Node() as node:
        node.code.set_path([code])
        srv = await gen_server.start("bench_srv")
        for clients in (1, 2):
            counts = [0] * clients
            deadline = time.perf_counter() + seconds

            async def client(
                k: int, counts: list[int] = counts, deadline: float = deadline
            ) -> None:
                n = 0
                while True:
                    await gen_server.call(srv, "ping")
                    n += 1
                    if n % 1000 == 0 and time.perf_counter() > deadline:
                        break
                counts[k] = n

            for k in range(clients):
                node.spawn(client, k)
            await asyncio.sleep(seconds)
            while sum(1 for c in counts if c) < clients:
                await asyncio.sleep(0.01)
            rows.append(
                {
                    "bench": "calls",
                    "side": "relhandler",
                    "clients": clients,
                    "per_s": sum(counts) / seconds,
                }
            )
        n = 200_000
        t0 = time.perf_counter()
        for _ in range(n):
            gen_server.cast(srv, 1)
        await gen_server.call(srv, "ping")
        rows.append(
            {
                "bench": "casts",
                "side": "relhandler",
                "clients": 1,
                "per_s": n / (time.perf_counter() - t0),
            }
        )
    return rows


async def _asyncio_pingpong(seconds: float) -> dict[str, Any]:
    """The ceiling for pure asyncio: two tasks handing futures back and forth."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[asyncio.Future[str]] = asyncio.Queue()

    async def server() -> None:
        while True:
            f = await q.get()
            f.set_result("pong")

    t = loop.create_task(server())
    n = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            f = loop.create_future()
            q.put_nowait(f)
            await f
        n += 1000
    t.cancel()
    return {"bench": "calls", "side": "asyncio", "clients": 1, "per_s": n / seconds}


def pykka_calls(seconds: float) -> list[dict[str, Any]]:
    try:
        import pykka
    except ImportError:
        return []

    class Echo(pykka.ThreadingActor):  # type: ignore[misc]
        def on_receive(self, message: Any) -> str:
            return "pong"

    ref = Echo.start()
    rows = []
    for clients in (1, 2):
        counts = [0] * clients
        deadline = time.perf_counter() + seconds

        def client(k: int, counts: list[int] = counts, deadline: float = deadline) -> None:
            while time.perf_counter() < deadline:
                ref.ask("ping")
                counts[k] += 1

        ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        rows.append(
            {"bench": "calls", "side": "pykka", "clients": clients, "per_s": sum(counts) / seconds}
        )
    ref.stop()
    return rows


# -- relhandler, a real node upgraded through the release handler --------------------------------
def cli(*args: str) -> Any:
    r = subprocess.run(
        [sys.executable, "-m", "relhandler.cli", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if r.returncode != 0:
        raise RuntimeError(f"relhandler {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout) if r.stdout.strip() else None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rh_upgrade(work: Path, n: int, builds: dict[int, Path]) -> dict[str, Any]:
    from relhandler.control.client import Client

    if n not in builds:
        builds[n] = build_fleet(work / f"build-{n}", n=n)
    out = builds[n]
    root = work / f"root-{n}-{time.monotonic_ns()}"
    cli("deploy", str(out / "fleet-1.0.0.tar.gz"), "--root", str(root))
    cli("start", "--root", str(root), "--daemon")
    try:
        pid = cli("status", "--root", str(root))["pid"]
        cli("unpack", str(out / "fleet-2.0.0.tar.gz"), "--root", str(root))
        rss0 = _rss_mb(pid)
        lat: list[float] = []
        failed = [0]
        stop = threading.Event()

        def load() -> None:
            with Client(root, timeout=60) as c:
                i = 0
                while not stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        c.call("rpc", {"module": "fleet.api", "function": "call_one", "args": [i]})
                        lat.append((time.perf_counter() - t0) * 1000)
                    except Exception:
                        failed[0] += 1
                    i += 7

        th = threading.Thread(target=load, daemon=True)
        th.start()
        try:
            time.sleep(0.3)
            before = list(lat)
            n_before = len(before)
            res = cli("install", "2.0.0", "--root", str(root))
            during = lat[n_before:]
            time.sleep(0.2)
        finally:
            stop.set()
            th.join(60)
        with Client(root, timeout=60) as c:
            pauses = c.call("rpc", {"module": "fleet.api", "function": "pauses", "args": []})
        steps = {s["instruction"].split()[0]: s["ms"] for s in res["steps"]}
        return {
            "bench": "upgrade",
            "side": "relhandler",
            "n": n,
            "total_ms": res["ms"],
            "suspend_ms": steps.get("suspend", 0.0),
            "load_ms": steps.get("load", 0.0),
            "code_change_ms": steps.get("code_change", 0.0),
            "resume_ms": steps.get("resume", 0.0),
            "pause_p50_ms": pauses.get("p50"),
            "pause_p99_ms": pauses.get("p99"),
            "pause_max_ms": pauses.get("max"),
            "processes_paused": pauses["count"],
            "rss_before_mb": round(rss0, 1),
            "rss_after_mb": round(_rss_mb(pid), 1),
            "calls_failed": failed[0],
            "call_p_max_before_ms": max(before) if before else None,
            "call_max_during_ms": max(during) if during else None,
        }
    finally:
        subprocess.run(
            [sys.executable, "-m", "relhandler.cli", "stop", "--root", str(root)],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one round, small sizes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--seconds", type=float, default=2.0, help="per throughput measurement")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)
    rounds = 1 if a.quick else a.rounds
    sizes = [int(x) for x in ("1000" if a.quick else a.sizes).split(",")]
    seconds = 0.5 if a.quick else a.seconds
    have_erl = shutil.which("erl") is not None
    rows: list[dict[str, Any]] = []
    builds: dict[int, Path] = {}
    with tempfile.TemporaryDirectory(prefix="relhandler-bench-") as tmp:
        work = Path(tmp)
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}", file=sys.stderr)
            if have_erl:
                rows += otp(work, "calls", str(max(1, int(seconds))))
            rows += asyncio.run(_rh_calls(seconds, work))
            rows.append(asyncio.run(_asyncio_pingpong(seconds)))
            rows += pykka_calls(seconds)
            for n in sizes:
                if have_erl:
                    rows += otp(work, "upgrade", str(n))
                    rows += otp_install_release(work, n)
                rows.append(rh_upgrade(work, n, builds))
    for row in rows:
        row["round"] = row.get("round", 0)
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = a.out / f"{stamp}.json"
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "python": sys.version.split()[0],
        "erl": have_erl,
        "rounds": rounds,
        "sizes": sizes,
    }
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(json.dumps({"meta": meta, "rows": rows}))
    print_table(rows)
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
