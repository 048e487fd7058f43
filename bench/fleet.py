"""A release of N GenServers under a simple_one_for_one supervisor (v1 and v2), built and
relup'ed with the real toolchain. Used by the upgrade benchmark and the rollback tests."""

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
                 "modules": ["fleet.pool"]}]))
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
    return ("reply", "pong", state)


def handle_cast(msg, state):
    return ("noreply", state)
"""

APPUP = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [["update", "fleet.worker", {{ change = "advanced", extra = [] }}]]

[[down]]
to = "1.0.0"
instructions = [["update", "fleet.worker", {{ change = "advanced", extra = [] }}]]
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


def build_fleet(tmp: Path, v2_code_change: str = DEFAULT_CODE_CHANGE, n: int = 1000) -> Path:
    """Build fleet 1.0.0 and 2.0.0 (whose worker gets ``v2_code_change``) and the relup."""
    out = tmp / "fleet-rel"
    for vsn in ("1.0.0", "2.0.0"):
        proj = tmp / f"fleet-{vsn}"
        pkg = proj / "src" / "fleet"
        pkg.mkdir(parents=True)
        (proj / "pyproject.toml").write_text(PYPROJECT.format(v=vsn, n=n))
        for name, src in FILES.items():
            (pkg / name).write_text(textwrap.dedent(src))
        worker = WORKER.format(v="v1" if vsn == "1.0.0" else "v2")
        if vsn == "2.0.0":
            worker += textwrap.dedent(v2_code_change)
            (pkg / "fleet.appup.toml").write_text(APPUP.format())
        (pkg / "worker.py").write_text(worker)
        cli("build", "--project", str(proj), "--out", str(out))
    cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", str(out / "fleet"))
    return out
