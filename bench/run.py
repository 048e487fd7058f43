"""Side-by-side benchmarks: relhandler vs Erlang/OTP (and Pykka, and bare asyncio).

    python -m bench.run [--quick] [--rounds R] [--sizes 1000,10000] [--skip-web]

Both sides run in this one invocation, alternating, ``R`` rounds; medians and ratios are
printed as a table and every row is written to ``bench/results/<stamp>.json``; then
bench/web.py (websocket services through a new version, against gunicorn and uvicorn).
Numbers on these shared 2-core machines are noisy: read the ratios, not the absolute values.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
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
        # "relhandler": as shipped (an idle server's handle_call runs on the caller's turn);
        # "relhandler-queued": every call through the server's mailbox and task
        for side, clients in (
            ("relhandler", 1),
            ("relhandler", 2),
            ("relhandler-queued", 1),
            ("relhandler-queued", 2),
        ):
            node.inline_calls = side == "relhandler"
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
                    "side": side,
                    "clients": clients,
                    "per_s": sum(counts) / seconds,
                }
            )
        node.inline_calls = True
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


TCP_CONNS = 20  # connections held open through each upgrade


def _tcp_load(port: int, stop: threading.Event, out: dict[str, Any]) -> None:
    """Keep TCP_CONNS echo connections busy, round-robin, until ``stop``; then check that
    each still answers, now from v2. A connection that fails at any point is dropped."""
    conns = []
    for _ in range(TCP_CONNS):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        conns.append((s, s.makefile("rb")))
    dropped: set[int] = set()
    worst = 0.0
    sent = 0
    out["ready"].set()

    def ping(k: int, text: str) -> bytes:
        s, f = conns[k]
        s.sendall(text.encode() + b"\n")
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        return bytes(line)

    while not stop.is_set():
        for k in range(TCP_CONNS):
            if k in dropped:
                continue
            t0 = time.perf_counter()
            try:
                ping(k, f"ping {sent}")
                sent += 1
                worst = max(worst, (time.perf_counter() - t0) * 1000)
            except OSError:
                dropped.add(k)
    v2 = 0
    for k in range(TCP_CONNS):
        try:
            v2 += ping(k, "after").startswith(b"v2 ")
        except OSError:
            dropped.add(k)
    for s, f in conns:
        f.close()
        s.close()
    out.update(tcp_pings=sent, tcp_dropped=len(dropped), tcp_answering_v2=v2, tcp_max_ms=worst)


def _phases(res: dict[str, Any]) -> dict[str, float]:
    steps: dict[str, float] = {}
    for st in res["steps"]:  # one row per instruction: add up e.g. both code_changes
        kind = st["instruction"].split()[0]
        steps[kind] = steps.get(kind, 0.0) + st["ms"]
    return {
        "total_ms": res["ms"],
        "suspend_ms": steps.get("suspend", 0.0),
        "load_ms": steps.get("load", 0.0),
        "code_change_ms": steps.get("code_change", 0.0),
        "resume_ms": steps.get("resume", 0.0),
    }


def _pause_row(pauses: dict[str, Any]) -> dict[str, Any]:
    return {
        "pause_p50_ms": pauses.get("p50"),
        "pause_p99_ms": pauses.get("p99"),
        "pause_max_ms": pauses.get("max"),
        "processes_paused": pauses["count"],
    }


def rh_upgrade(work: Path, n: int, builds: dict[int, Path], *, load: bool = True) -> dict[str, Any]:
    """Upgrade a real fleet node of ``n`` workers from 1.0.0 to 2.0.0 under load: a process
    on the node calling the workers and casting numbered messages to them (like OTP's side),
    and TCP_CONNS echo connections from here, all checked afterwards. With ``load=False``
    the node is quiet (row ``upgrade_quiet``, compared with OTP's ``install_release``, which
    is measured quiet too)."""
    from relhandler.control.client import Client

    if n not in builds:
        builds[n] = build_fleet(work / f"build-{n}", n=n)
    out = builds[n]
    root = work / f"r{n}-{time.monotonic_ns() % 10**9}"  # short: the socket path has a limit
    cli("deploy", str(out / "fleet-1.0.0.tar.gz"), "--root", str(root))
    cli("start", "--root", str(root), "--daemon")
    installer = Client(root, timeout=900)
    try:
        pid = cli("status", "--root", str(root))["pid"]
        cli("unpack", str(out / "fleet-2.0.0.tar.gz"), "--root", str(root))
        rss0 = _rss_mb(pid)

        def rpc(fn: str) -> Any:
            with Client(root, timeout=120) as c:
                return c.call("rpc", {"module": "fleet.api", "function": fn, "args": []})

        def install() -> Any:
            # the control-socket client the CLI uses, opened and authenticated beforehand:
            # a CLI process starting up (~0.2 s of CPU) on this 2-core machine would preempt
            # the node in the middle of the measurement
            return installer.call("install", {"version": "2.0.0"})

        installer.open()  # connect and authenticate now
        if not load:
            res = install()
            return {
                "bench": "upgrade_quiet",
                "side": "relhandler",
                "n": n,
                **_phases(res),
                **_pause_row(rpc("pauses")),
            }
        tcp: dict[str, Any] = {"ready": threading.Event()}
        stop = threading.Event()
        th = threading.Thread(target=_tcp_load, args=(rpc("tcp_port"), stop, tcp), daemon=True)
        th.start()
        tcp["ready"].wait(60)
        rpc("load_start")
        try:
            time.sleep(0.3)
            rpc("load_mark")
            res = install()
            time.sleep(0.2)
        finally:
            stats = rpc("load_stop")
            stop.set()
            th.join(120)
        return {
            "bench": "upgrade",
            "side": "relhandler",
            "n": n,
            **_phases(res),
            **_pause_row(rpc("pauses")),
            "rss_before_mb": round(rss0, 1),
            "rss_after_mb": round(_rss_mb(pid), 1),
            "calls_failed": stats["failed"],
            "calls_during": stats["calls_during"],
            "call_p_max_before_ms": stats["max_before_ms"],
            "call_max_during_ms": stats["max_during_ms"],
            "casts_sent": stats["casts"],
            "casts_lost": stats["casts_lost"],
            "casts_reordered": stats["casts_reordered"],
            "tcp_conns": TCP_CONNS,
            "tcp_pings": tcp.get("tcp_pings"),
            "tcp_dropped": tcp.get("tcp_dropped"),
            "tcp_answering_v2": tcp.get("tcp_answering_v2"),
            "tcp_max_ms": tcp.get("tcp_max_ms"),
        }
    finally:
        installer.close()
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
    ap.add_argument("--skip-web", action="store_true", help="not bench/web.py's scenario")
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
                rows.append(rh_upgrade(work, n, builds, load=False))
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
    print_table(rows)  # the JSON is in the results file only: the log gets readable tables
    print(f"results: {path}", file=sys.stderr)
    if not a.skip_web:  # websocket services through a new version (bench/web.py)
        from bench import web

        return web.main(["--rounds", str(rounds), "--out", str(a.out)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
