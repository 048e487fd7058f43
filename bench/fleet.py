"""A release of N GenServers under a simple_one_for_one supervisor (v1 and v2), built and
relup'ed with the real toolchain. Used by the upgrade benchmark and the rollback tests.

Besides the workers, the app has a TCP echo listener with one GenServer per connection
(``fleet.conn``, upgraded too: its replies say which version answered) and, in
``fleet.api``, a load process that runs *on the node* (as the OTP side's client does):
it calls the workers round-robin, timing each call, and casts a numbered message to
each worker it called, so that lost or reordered messages can be counted afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PYPROJECT = """
[project]
name = "fleet"
version = "{v}"
requires-python = ">=3.11"

[tool.relhandler.release]
name = "fleet"
applications = ["fleet"]

[tool.relhandler.apps.fleet]
path = "src/fleet"
start = "fleet.app:start"
env = {{ workers = {n} }}
"""

FILES = {
    "__init__.py": "",
    "app.py": """
        from relhandler.runtime import current_node, supervisor

        async def start():
            top = await supervisor.start_link("fleet.sup", None, name="fleet_sup")
            for i in range(current_node().apps.get_env("fleet", "workers", 1000)):
                await supervisor.start_child("fleet_pool", [i])
            return top
    """,
    "sup.py": """
        def init(args):
            return ("ok", ({"strategy": "one_for_one"}, [
                {"id": "pool", "start": ("fleet.pool", "start_link", []), "type": "supervisor",
                 "modules": ["fleet.pool"]},
                {"id": "conns", "start": ("fleet.conn", "start_sup", []), "type": "supervisor",
                 "modules": ["fleet.conn"]},
                {"id": "listener", "start": ("fleet.listener", "start_link", []),
                 "modules": ["fleet.listener"]}]))
    """,
    "listener.py": """
        import asyncio

        from relhandler.runtime import gen_server, supervisor


        def start_link():
            return gen_server.start_link(__name__, None, name="fleet_listener")


        async def init(args):
            async def on_connect(reader, writer):
                await supervisor.start_child("fleet_conns", [reader, writer])

            server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
            return ("ok", {"server": server, "port": server.sockets[0].getsockname()[1]})


        def handle_call(req, from_, state):
            return ("reply", state["port"], state)


        def handle_cast(msg, state):
            return ("noreply", state)


        def terminate(reason, state):
            state["server"].close()
    """,
    "pool.py": """
        from relhandler.runtime import supervisor

        def start_link():
            return supervisor.start_link("fleet.pool", None, name="fleet_pool")

        def init(args):
            return ("ok", ({"strategy": "simple_one_for_one", "intensity": 0}, [
                {"id": "w", "start": ("fleet.worker", "start_link", []),
                 "modules": ["fleet.worker"]}]))
    """,
    "api.py": """
        from relhandler.runtime import gen_server, supervisor

        async def _pids():
            return [c.pid for c in await supervisor.which_children("fleet_pool")]

        async def snapshot():
            return {str(p): await gen_server.call(p, "state") for p in await _pids()}

        async def sup_info():
            from relhandler.runtime import sys

            st = await sys.get_state("fleet_sup")
            kids = await supervisor.which_children("fleet_sup")
            return {"intensity": st.intensity, "period": st.period,
                    "children": [[c.id, c.pid is not None] for c in kids]}

        async def version():
            return await gen_server.call((await _pids())[0], "version")

        async def ping_all():
            n = 0
            for p in await _pids():
                n += (await gen_server.call(p, "ping")) == "pong"
            return n

        async def pauses():
            # each worker's last suspended→resumed time in ms (recorded by the runtime)
            from relhandler.runtime import current_node

            # summarised on the node: 100,000 floats would not fit in one control frame
            node = current_node()
            out = []
            for p in await _pids():
                s = node.processes[p].sys
                if s.resumed_at >= s.suspended_at > 0:
                    out.append((s.resumed_at - s.suspended_at) * 1000)
            out.sort()
            k = len(out)
            if not k:
                return {"count": 0}
            return {"count": k, "p50": out[k // 2], "p99": out[min(k - 1, k * 99 // 100)],
                    "max": out[-1]}

        async def call_one(i):
            pids = await _pids()
            return await gen_server.call(pids[i % len(pids)], "ping")

        async def tcp_port():
            return await gen_server.call("fleet_listener", "port")

        # -- load on the node: timed calls and numbered casts --------------------------------
        import time

        _load = {}

        async def load_start():
            from relhandler.runtime import spawn

            pids = await _pids()
            st = {"calls": 0, "failed": 0, "max_ms": 0.0, "max_before_ms": 0.0,
                  "calls_before": 0, "sent": {}, "stop": False, "done": False}
            _load["st"] = st

            async def run():
                i, n, sent = 0, len(pids), st["sent"]
                clock = time.perf_counter
                while not st["stop"]:
                    p = pids[i % n]
                    t0 = clock()
                    try:
                        ok = await gen_server.call(p, "ping", 60) == "pong"
                    except Exception:
                        ok = False
                    dt = (clock() - t0) * 1000
                    if dt > st["max_ms"]:
                        st["max_ms"] = dt
                    st["calls"] += 1
                    st["failed"] += not ok
                    k = sent.get(p, 0) + 1
                    sent[p] = k
                    gen_server.cast(p, ("seq", k))
                    i += 7
                st["done"] = True

            spawn(run)
            return True

        async def load_mark():
            # from here on, max_ms is the slowest call *during* the upgrade
            st = _load["st"]
            st["max_before_ms"], st["max_ms"] = st["max_ms"], 0.0
            st["calls_before"] = st["calls"]
            return True

        async def load_stop():
            import asyncio

            st = _load.pop("st")
            st["stop"] = True
            while not st["done"]:
                await asyncio.sleep(0.001)
            lost = reordered = 0
            for p, k in st["sent"].items():
                seen, bad = await gen_server.call(p, "seq", 60)
                lost += k - seen
                reordered += bad
            return {"calls": st["calls"], "calls_during": st["calls"] - st["calls_before"],
                    "failed": st["failed"], "max_before_ms": st["max_before_ms"],
                    "max_during_ms": st["max_ms"], "casts": sum(st["sent"].values()),
                    "casts_lost": lost, "casts_reordered": reordered}
    """,
}

WORKER = """
from relhandler.runtime import gen_server

VERSION = "{v}"


def start_link(i):
    return gen_server.start_link(__name__, i)


def init(i):
    return ("ok", {{"id": i}})


def handle_call(req, from_, state):
    if req == "version":
        return ("reply", VERSION, state)
    if req == "state":
        return ("reply", state, state)
    if req == "seq":
        return ("reply", (state.get("seen", 0), state.get("bad", 0)), state)
    return ("reply", "pong", state)


def handle_cast(msg, state):
    if msg[0] == "seq":
        # numbered casts from the load process: count them, and count any out of order
        bad = state.get("bad", 0) + (msg[1] != state.get("last", 0) + 1)
        return ("noreply", {{**state, "seen": state.get("seen", 0) + 1, "last": msg[1],
                             "bad": bad}})
    return ("noreply", state)
"""

CONN = """
from relhandler.runtime import gen_server, sockets, supervisor

VERSION = "{v}"


def start_sup():
    return supervisor.start_link(__name__, "sup", name="fleet_conns")


def init(args):
    if args == "sup":
        return ("ok", ({{"strategy": "simple_one_for_one", "intensity": 100, "period": 1}},
                       [{{"id": "conn", "start": (__name__, "start_conn", []),
                         "restart": "temporary", "modules": [__name__]}}]))
    reader, writer = args
    return ("ok", {{"sock": sockets.wrap(reader, writer), "lines": 0}})


def start_conn(reader, writer):
    return gen_server.start_link(__name__, (reader, writer))


def handle_info(msg, state):
    if msg[0] == "tcp":
        n = state["lines"] + 1
        state["sock"].send(f"{{VERSION}} {{n}} {{msg[2].decode().strip()}}\\n".encode())
        return ("noreply", {{**state, "lines": n}})
    if msg[0] == "tcp_closed":
        return ("stop", "normal", state)
    return ("noreply", state)


def handle_call(req, from_, state):
    return ("reply", state["lines"], state)


def handle_cast(msg, state):
    return ("noreply", state)


def terminate(reason, state):
    if isinstance(state, dict) and "sock" in state:
        state["sock"].close()


def code_change(old_vsn, state, extra):
    return ("ok", state)
"""

APPUP = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [
  ["update", "fleet.worker", {{ change = "advanced", extra = [] }}],
  ["update", "fleet.conn", {{ change = "advanced", extra = [] }}],
]

[[down]]
to = "1.0.0"
instructions = [
  ["update", "fleet.worker", {{ change = "advanced", extra = [] }}],
  ["update", "fleet.conn", {{ change = "advanced", extra = [] }}],
]
"""


DEFAULT_CODE_CHANGE = """
def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple):
        return ("ok", {"id": state["id"]})
    return ("ok", {**state, "history": []})
"""


def cli(*args: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "relhandler.cli", *args], capture_output=True, text=True, timeout=600
    )
    if r.returncode != 0:
        raise RuntimeError(f"relhandler {' '.join(args)}: {r.stderr.strip()}")


def build_fleet(
    tmp: Path,
    v2_code_change: str = DEFAULT_CODE_CHANGE,
    n: int = 1000,
    *,
    v2_files: dict[str, str] | None = None,
    appup: str = APPUP,
) -> Path:
    """Build fleet 1.0.0 and 2.0.0 (whose worker gets ``v2_code_change``, and which has
    ``v2_files`` added or replaced, with ``appup``) and the relup."""
    out = tmp / "fleet-rel"
    for vsn in ("1.0.0", "2.0.0"):
        proj = tmp / f"fleet-{vsn}"
        pkg = proj / "src" / "fleet"
        pkg.mkdir(parents=True)
        (proj / "pyproject.toml").write_text(PYPROJECT.format(v=vsn, n=n))
        files = dict(FILES, **(v2_files or {})) if vsn == "2.0.0" else FILES
        for name, src in files.items():
            (pkg / name).write_text(textwrap.dedent(src))
        worker = WORKER.format(v="v1" if vsn == "1.0.0" else "v2")
        if vsn == "2.0.0":
            worker += textwrap.dedent(v2_code_change)
            (pkg / "fleet.appup.toml").write_text(appup.format())
        (pkg / "worker.py").write_text(worker)
        (pkg / "conn.py").write_text(CONN.format(v="v1" if vsn == "1.0.0" else "v2"))
        cli("build", "--project", str(proj), "--out", str(out))
    cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "fleet"))
    return out
