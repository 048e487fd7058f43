"""Websocket clients through a new version: relhandler vs gunicorn HUP vs uvicorn HUP.

    python -m bench.web [--rounds 3] [--clients 100] [--deploy-at 6] [--http-rounds 9]

One Starlette app (``benchapp``) in two versions, served three ways: by a relhandler node
(the app in a release; v2 is an ``install`` over the control socket), by gunicorn with the
uvicorn worker (v2 written to disk, then ``SIGHUP``) and by ``uvicorn --workers 2`` (the
same, its supervisor's ``SIGHUP``). Each run: ``--clients`` websocket clients on loopback,
each with one ping in flight at a time, one every ``--interval`` s, plus 4 keep-alive HTTP
clients; every answer carries the version, a per-connection counter (a local of the
endpoint's loop) and a per-node counter (a module global). v2 is deployed ``--deploy-at``
seconds after all clients are connected. A dropped connection is reconnected and its ping
re-sent (its latency runs from the first send). The servers take turns, ``--rounds``
times; medians are printed. Beside it, HTTP requests/s of ``GET /`` (plain text), relhandler
against uvicorn, one process each, driven by one load-generator process, in alternation.

gunicorn, uvicorn and uvicorn-worker come from bench/requirements.txt (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
WIDTH = 100
PY = sys.executable

# -- the app, two versions ----------------------------------------------------------------------
SITE = '''
"""The site: the only module that changes between versions."""
__vsn__ = "{n}"

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

import benchapp.wsloop

VSN = "v{n}"


async def hello(request):
    return PlainTextResponse("hello " + VSN)


def answer(conn, node):
    return f"{{VSN}} {{conn}} {{node}}"


app = Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", benchapp.wsloop.ws)])
'''

WSLOOP = '''
"""The websocket endpoint's loop (unchanged between versions): its local `conn` is the
per-connection counter; each answer is a qualified call into the current benchapp.site."""
import benchapp.site as site
import benchapp.state as state


async def ws(websocket):
    await websocket.accept()
    conn = 0
    while True:
        await websocket.receive_text()
        conn += 1
        state.hits += 1
        await websocket.send_text(site.answer(conn, state.hits))
'''

STATE = '''
"""The per-node counter, in process memory (unchanged between versions)."""
hits = 0
'''

PYPROJECT = """
[project]
name = "benchapp"
version = "{n}.0.0"
requires-python = ">=3.11"
dependencies = ["starlette>=0.37"]

[tool.relhandler.release]
name = "benchapp"
applications = ["benchapp"]
include_deps = true

[tool.relhandler.apps.benchapp]
path = "src/benchapp"
start = "benchapp.app:start"

[[tool.relhandler.apps.benchapp.env.listeners]]
name = "http"
app = "benchapp.site:app"
"""

APP = """
from relhandler.runtime import supervisor


async def start():
    return await supervisor.start_link("benchapp.sup", None, name="benchapp_sup")
"""

SUP = """
from relhandler import web


def init(args):
    return ("ok", ({"strategy": "one_for_one", "intensity": 5, "period": 10},
                   [web.child_spec("benchapp")]))
"""

APPUP = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [["load_module", "benchapp.site"]]

[[down]]
to = "1.0.0"
instructions = [["load_module", "benchapp.site"]]
"""


def write_package(pkg: Path, n: int) -> None:
    """The plain package (what gunicorn and uvicorn import from disk)."""
    pkg.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("__init__.py", ""),
        ("state.py", STATE),
        ("wsloop.py", WSLOOP),
        ("site.py", SITE.format(n=n)),
    ):
        tmp = pkg / f".{name}.tmp"
        tmp.write_text(textwrap.dedent(text).lstrip())
        tmp.replace(pkg / name)  # atomic: a worker importing now sees one version or the other


def build_release(work: Path) -> Path:
    """benchapp 1.0.0 and 2.0.0 (Starlette bundled) and the relup; returns the out dir."""
    out = work / "rel"
    for n in (1, 2):
        proj = work / f"proj-v{n}"
        pkg = proj / "src" / "benchapp"
        write_package(pkg, n)
        (proj / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT.format(n=n)).lstrip())
        (pkg / "app.py").write_text(APP.lstrip())
        (pkg / "sup.py").write_text(SUP.lstrip())
        (pkg / "benchapp.appup.toml").write_text(
            'version = "1.0.0"\nup = []\ndown = []\n' if n == 1 else APPUP.lstrip()
        )
        rh("build", "--project", str(proj), "--out", str(out))
    rh("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "benchapp"))
    return out


def rh(*args: str) -> Any:
    r = subprocess.run(
        [PY, "-m", "relhandler.cli", *args, "--json"], capture_output=True, text=True, timeout=600
    )
    if r.returncode != 0:
        raise RuntimeError(f"relhandler {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout) if r.stdout.strip() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


# -- the servers --------------------------------------------------------------------------------
class Server:
    """One way of serving benchapp: start on v1, deploy v2, stop."""

    side = ""
    port = 0
    pid: int | None = None  # the OS process that serves (its CPU time is read per turn)
    notes: list[str] = []  # noqa: RUF012 - replaced per instance

    def start(self) -> None:
        raise NotImplementedError

    def deploy(self) -> None:
        """Ask for v2 (blocking; called from a thread). Its start time is the 'request'."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Relhandler(Server):
    side = "relhandler"

    def __init__(self, work: Path, rel: Path) -> None:
        self.work, self.rel = work, rel
        self.root = work / f"root-{time.monotonic_ns()}"
        self.client: Any = None

    def start(self) -> None:
        from relhandler.control.client import Client

        rh("deploy", str(self.rel / "benchapp-1.0.0.tar.gz"), "--root", str(self.root))
        rh("start", "--root", str(self.root), "--daemon")
        rh("unpack", str(self.rel / "benchapp-2.0.0.tar.gz"), "--root", str(self.root))
        self.port = int(
            rh("rpc", "relhandler.web:port", '["benchapp", "http"]', "--root", str(self.root))
        )
        from relhandler.control.server import run_dir

        self.pid = int((run_dir(self.root) / "node.pid").read_text())
        # the control-socket client `relhandler install` uses, authenticated beforehand: a
        # CLI process starting up would cost ~0.2 s of CPU in the middle of the measurement
        self.client = Client(self.root, timeout=120)
        self.client.open()

    def deploy(self) -> None:
        self.client.call("install", {"version": "2.0.0"})

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        subprocess.run(
            [PY, "-m", "relhandler.cli", "stop", "--root", str(self.root)],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(self.root, ignore_errors=True)


class Plain(Server):
    """gunicorn or uvicorn importing benchapp from a directory; v2 = new files + SIGHUP."""

    def __init__(
        self,
        work: Path,
        side: str,
        *,
        workers: int = 1,
        http: str = "h11",
        own_session: bool = False,
    ) -> None:
        self.side = side
        self.workers = workers
        self.http = http  # uvicorn's HTTP protocol: h11 (as relhandler) or httptools
        self.own_session = own_session  # started as a daemon is (setsid), see run_http
        self.dir = work / f"{side}-{time.monotonic_ns()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        bind = ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.side == "gunicorn":
            return [
                *(PY, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker"),
                *("-w", str(self.workers), "-b", f"127.0.0.1:{self.port}", "benchapp.site:app"),
            ]
        workers = ["--workers", str(self.workers)] if self.workers > 1 else []
        return [
            *(PY, "-m", "uvicorn", "benchapp.site:app", *bind, *workers, "--http", self.http),
            *("--no-access-log", "--log-level", "warning"),
        ]

    def start(self) -> None:
        write_package(self.dir / "benchapp", 1)
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(self.dir), "PYTHONDONTWRITEBYTECODE": "1"}
        self.log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_session,
        )
        self.pid = self.proc.pid  # one process each (no --workers) in the HTTP bench
        wait_port(self.port)

    def deploy(self) -> None:
        write_package(self.dir / "benchapp", 2)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        # what the server said about its restart (e.g. uvicorn giving up on a new worker)
        log = (self.dir / "server.log").read_text(errors="replace").splitlines()
        self.notes = [x for x in log if "ready in time" in x or "Booting worker" in x][-3:]
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the websocket and HTTP clients -------------------------------------------------------------
@dataclass
class Ws:
    """One client: every answer as (sent, received, version, conn counter, node counter)."""

    answers: list[tuple[float, float, str, int, int]] = field(default_factory=list)
    reconnects: int = 0
    failed: int = 0  # pings lost with their connection, connection attempts that failed


async def _connect(url: str, c: Ws, stop: asyncio.Event) -> Any:
    from websockets.asyncio.client import connect

    while True:
        try:
            return await asyncio.wait_for(connect(url, ping_interval=None, max_queue=4), 10)
        except Exception:  # refused, reset, a handshake refused while the server restarts
            c.failed += 1
            if stop.is_set():
                return None
            await asyncio.sleep(0.02)


async def ws_client(url: str, c: Ws, start: float, interval: float, stop: asyncio.Event) -> None:
    ws = await _connect(url, c, stop)
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    nxt = time.monotonic()
    while not stop.is_set() and ws is not None:
        sent = time.monotonic()
        while ws is not None:
            try:
                await ws.send("ping")
                text = await asyncio.wait_for(ws.recv(), 10)
                break
            except Exception:  # closed by the server (1012, 1001, reset) or no answer
                c.failed += 1
                c.reconnects += 1
                with contextlib.suppress(Exception):
                    await ws.close()
                ws = await _connect(url, c, stop)
        else:
            break
        now = time.monotonic()
        vsn, conn, node = str(text).split()
        c.answers.append((sent, now, vsn, int(conn), int(node)))
        nxt = max(nxt + interval, now)
        await asyncio.sleep(nxt - now)
    if ws is not None:
        with contextlib.suppress(Exception):
            await ws.close()


@dataclass
class Http:
    ok: int = 0
    failed: int = 0


REQ = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n"


async def http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One keep-alive GET; the response body."""
    writer.write(REQ)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head[:40])
    i = head.lower().index(b"content-length:")
    return await reader.readexactly(int(head[i + 15 : head.index(b"\r\n", i)]))


async def http_client(port: int, h: Http, stop: asyncio.Event) -> None:
    """GET / every 20 ms on a keep-alive connection, reconnecting after a failure."""
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(http_get(*conn), 10)
            h.ok += 1
        except Exception:
            h.failed += 1
            if conn is not None:
                conn[1].close()
            conn = None
        await asyncio.sleep(0.02)
    if conn is not None:
        conn[1].close()


# -- one run ------------------------------------------------------------------------------------
def analyse(clients: list[Ws], deployed: float, asked: float) -> dict[str, Any]:
    """What the table reports, from every client's answers (``asked``: the deploy request)."""
    kept = state = 0
    first_v2: list[float] = []
    for c in clients:
        i = next((k for k, a in enumerate(c.answers) if a[2] == "v2"), None)
        if i is None:
            continue
        first_v2.append(c.answers[i][1])
        if c.reconnects == 0:  # one connection, from v1 to v2
            kept += 1
        if i > 0:
            before, after = c.answers[i - 1], c.answers[i]
            # per-connection counter continues, per-node counter did not go back
            if after[3] == before[3] + 1 and after[4] > before[4]:
                state += 1
    n = len(clients)
    all_v2 = len(first_v2) == n
    window_end = (max(first_v2) if all_v2 else deployed) + 0.5
    during = [a[1] - a[0] for c in clients for a in c.answers if asked - 0.5 <= a[0] <= window_end]
    before = [a[1] - a[0] for c in clients for a in c.answers if a[0] < asked - 0.5]
    return {
        "clients": n,
        "kept": kept,
        "state_kept": state,
        "on_v2": len(first_v2),
        "first_v2_s": (min(first_v2) - asked) if first_v2 else None,
        "all_v2_s": (max(first_v2) - asked) if all_v2 else None,
        "ping_max_ms": max(during) * 1000 if during else None,
        "ping_p50_before_ms": statistics.median(before) * 1000 if before else None,
        "pings": sum(len(c.answers) for c in clients),
        "ws_failed": sum(c.failed for c in clients),
        "reconnects": sum(c.reconnects for c in clients),
    }


async def scenario(server: Server, n: int, deploy_at: float, interval: float) -> dict[str, Any]:
    stop = asyncio.Event()
    url = f"ws://127.0.0.1:{server.port}/ws"
    clients = [Ws() for _ in range(n)]
    t0 = time.monotonic() + 2.0  # everyone connected by then; pings spread over one interval
    tasks = [
        asyncio.create_task(ws_client(url, c, t0 + k * interval / n, interval, stop))
        for k, c in enumerate(clients)
    ]
    http = Http()
    pollers = [asyncio.create_task(http_client(server.port, http, stop)) for _ in range(4)]
    await asyncio.sleep(t0 + deploy_at - time.monotonic())
    asked = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, server.deploy)
    replied = time.monotonic()
    deadline = asked + 30
    while time.monotonic() < deadline:  # until every client has had a v2 answer
        if all(any(a[2] == "v2" for a in c.answers[-3:]) for c in clients):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks, *pollers)
    row = analyse(clients, replied, asked)
    row.update(
        bench="switch",
        side=server.side,
        deploy_reply_s=replied - asked,
        http_ok=http.ok,
        http_failed=http.failed,
        failed=row["ws_failed"] + http.failed,
    )
    return row


def run_switch(server: Server, n: int, deploy_at: float, interval: float) -> dict[str, Any]:
    server.start()
    try:
        row = asyncio.run(scenario(server, n, deploy_at, interval))
    finally:
        server.stop()
    row["server_notes"] = server.notes
    return row


# -- HTTP throughput ----------------------------------------------------------------------------
async def _load(port: int, seconds: float, conns: int) -> int:
    count = 0
    end = time.monotonic() + seconds

    async def one() -> None:
        nonlocal count
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < end:
            await http_get(reader, writer)
            count += 1
        writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return count


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_generator(port: int, seconds: float, conns: int = 16) -> float:
    """Requests/s from a separate load-generator process (keep-alive, ``conns`` connections)."""
    r = subprocess.run(
        [PY, "-m", "bench.web", "--load", str(port), str(seconds), str(conns)],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
        cwd=HERE.parent,
    )
    return float(r.stdout.strip()) / seconds


def run_http(work: Path, rel: Path, rounds: int, seconds: float) -> list[dict[str, Any]]:
    """GET / requests/s, relhandler and uvicorn one process each, taking turns (uvicorn
    with h11, the protocol library relhandler uses, and with httptools, uvicorn[standard]'s).

    Every server runs in a session of its own, as a daemon or a service does: relhandler's
    node is one (``start --daemon``), and with Linux's scheduler autogroups a server that
    shared the load generator's session got its CPU as one group with it, which was worth
    up to ~40 % of the throughput on a loaded machine (bench/README.md)."""
    servers: list[Server] = [
        Relhandler(work, rel),
        Plain(work, "uvicorn", own_session=True),
        Plain(work, "uvicorn-httptools", http="httptools", own_session=True),
    ]
    rows = []
    try:
        for s in servers:
            s.start()
            load_generator(s.port, 0.5)  # warm up
        for r in range(rounds):
            for s in servers[r % 3 :] + servers[: r % 3]:
                before = cpu_seconds(s.pid)
                rate = load_generator(s.port, seconds)
                after = cpu_seconds(s.pid)
                row = {"bench": "http", "side": s.side, "round": r, "per_s": rate}
                if before is not None and after is not None and rate:
                    # the server's own CPU per request: what the shared machine's noise
                    # moves least (the rate also depends on the CPU share each got)
                    row["cpu_us"] = (after - before) / (rate * seconds) * 1e6
                rows.append(row)
    finally:
        for s in servers:
            s.stop()
    return rows


# -- report -------------------------------------------------------------------------------------
SIDES = (
    ("relhandler", "relhandler"),
    ("gunicorn", "gunicorn HUP"),
    ("uvicorn-workers", "uvicorn -w2 HUP"),
)


def _med(rows: list[dict[str, Any]], side: str, key: str) -> float | None:
    vals = [r[key] for r in rows if r["side"] == side and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _fmt(v: float | None, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "—"
    if unit == "ms":
        return f"{v:,.0f} ms" if v >= 10 else f"{v:.1f} ms"
    if unit == "s":
        return f"{v:.{digits}f} s"
    return f"{v:g}"


def print_report(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    con = console or Console(width=WIDTH)
    sw = [r for r in rows if r["bench"] == "switch"]
    if sw:
        n = sw[0]["clients"]
        t = Table(title=f"{n} websocket clients, v2 deployed (median of {_rounds(sw)} rounds)")
        t.add_column("metric")
        for _, label in SIDES:
            t.add_column(label, justify="right")
        for key, label, unit in (
            ("kept", f"connections kept (of {n})", ""),
            ("state_kept", f"state kept (of {n})", ""),
            ("on_v2", f"clients on v2 within 30 s (of {n})", ""),
            ("failed", "failed requests", ""),
            ("first_v2_s", "request → first v2 answer", "s"),
            ("all_v2_s", f"request → all {n} on v2", "s"),
            ("ping_max_ms", "max ping latency, switch", "ms"),
            ("ping_p50_before_ms", "ping p50 before", "ms"),
        ):
            t.add_row(label, *(_fmt(_med(sw, side, key), unit, 3) for side, _ in SIDES))
        con.print(t)
        rh_all = _med(sw, "relhandler", "all_v2_s")
        gu_all = _med(sw, "gunicorn", "all_v2_s")
        if rh_all is not None and gu_all:
            con.print(f"time to all on v2, relhandler / gunicorn HUP: {rh_all / gu_all:.2f}×")
    http = [r for r in rows if r["bench"] == "http"]
    if http:
        t = Table(title=f"GET / requests/s, one process each (median of {_rounds(http)} rounds)")
        cols = ("server", "requests/s", "relhandler / it", "CPU µs/req", "it / relhandler")
        for col in cols:
            t.add_column(col, justify="right")
        for side, label in HTTP_SIDES:
            rate = _med(http, side, "per_s")
            cpu = _med(http, side, "cpu_us")
            ratio = _ratio(http, side, "per_s", lambda rh, it: rh / it)
            # CPU per request the other way round, so that above 1 is relhandler's way
            cpu_ratio = _ratio(http, side, "cpu_us", lambda rh, it: it / rh)
            t.add_row(
                label,
                f"{rate:,.0f}" if rate else "—",
                ratio,
                f"{cpu:,.0f}" if cpu else "—",
                cpu_ratio,
            )
        con.print(t)


HTTP_SIDES = (
    ("relhandler", "relhandler (h11)"),
    ("uvicorn", "uvicorn --http h11"),
    ("uvicorn-httptools", "uvicorn --http httptools"),
)


def _ratio(http: list[dict[str, Any]], side: str, key: str, f: Any) -> str:
    """The median over rounds of f(relhandler's value, side's value), both measured in
    the same round, back to back; range in brackets."""
    if side == "relhandler":
        return ""
    ratios = []
    for r in sorted({x["round"] for x in http}):
        a = [x[key] for x in http if x["round"] == r and x["side"] == "relhandler" and x.get(key)]
        b = [x[key] for x in http if x["round"] == r and x["side"] == side and x.get(key)]
        if a and b:
            ratios.append(f(a[0], b[0]))
    if not ratios:
        return "—"
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def _rounds(rows: list[dict[str, Any]]) -> int:
    return len({r["round"] for r in rows})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--load"]:  # the load-generator process
        port, seconds, conns = int(argv[1]), float(argv[2]), int(argv[3])
        print(asyncio.run(_load(port, seconds, conns)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--deploy-at", type=float, default=6.0)
    ap.add_argument("--interval", type=float, default=0.1, help="s between a client's pings")
    ap.add_argument("--http-seconds", type=float, default=2.0)
    ap.add_argument("--http-rounds", type=int, default=9, help="short turns: the load moves")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--skip-switch", action="store_true", help="only the HTTP throughput")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="relhandler-bench-web-") as tmp:
        work = Path(tmp)
        rel = build_release(work)
        makers = (
            lambda: Relhandler(work, rel),
            lambda: Plain(work, "gunicorn"),
            lambda: Plain(work, "uvicorn-workers", workers=2),
        )
        for r in range(0 if a.skip_switch else a.rounds):
            order = makers[r % 3 :] + makers[: r % 3]  # each side goes first once in 3 rounds
            for make in order:
                server = make()
                print(f"round {r + 1}/{a.rounds}: {server.side}", file=sys.stderr)
                row = run_switch(server, a.clients, a.deploy_at, a.interval)
                row["round"] = r
                rows.append(row)
        if not a.skip_http:
            rows += run_http(work, rel, a.http_rounds, a.http_seconds)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"web-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {"date": time.strftime("%Y-%m-%d"), "load": os.getloadavg(), "args": vars(a)}
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    print_report(rows)
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
