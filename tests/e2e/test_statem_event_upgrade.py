"""A gen_statem and a gen_event manager with a handler, upgraded live and downgraded on a
real node, from real tarballs built by the real CLI (issue 13, "What must be shown" 5)."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.client import Client
from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = pytest.mark.e2e

PYPROJECT = """
[project]
name = "fx_sm"
version = "{vsn}"
requires-python = ">=3.11"
dependencies = []

[tool.relhandler.release]
name = "fx_sm"
applications = ["fx_sm"]

[tool.relhandler.apps.fx_sm]
path = "src/fx_sm"
start = "fx_sm.app:start"
"""

COMMON = {
    "__init__.py": "",
    "app.py": """
        from relhandler.runtime import supervisor

        async def start():
            return await supervisor.start_link("fx_sm.sup", None, name="fx_sm_sup")
        """,
    "sup.py": """
        def init(args):
            return ("ok", ({"strategy": "one_for_one", "intensity": 5, "period": 10}, [
                {"id": "door", "start": ("fx_sm.door", "start_link", []),
                 "modules": ["fx_sm.door"]},
                # an event manager's modules are its handlers': asked at upgrade time
                {"id": "events", "start": ("fx_sm.events", "start_link", []),
                 "modules": "dynamic"},
            ]))
        """,
    "events.py": """
        from relhandler.runtime import gen_event

        async def start_link():
            pid = await gen_event.start_link(name="fx_events")
            r = await gen_event.add_handler(pid, "fx_sm.counter_handler", None)
            assert r == "ok", r
            return pid
        """,
    "api.py": """
        from relhandler.runtime import gen_event, gen_statem, sys, whereis

        async def door():
            return await gen_statem.call("fx_door", "get")

        def push(code):
            gen_statem.cast("fx_door", code)
            return "ok"

        async def notify(ev):
            await gen_event.sync_notify("fx_events", ev)
            return "ok"

        async def handler():
            return await gen_event.call("fx_events", "fx_sm.counter_handler", "get")

        async def states():
            door = await sys.get_state("fx_door")
            events = await sys.get_state("fx_events")
            status = await sys.get_status("fx_door")
            return {"door": door, "events": events, "timeouts": status["timeouts"],
                    "modules": await sys.get_modules("fx_events")}

        def pids():
            return [str(whereis("fx_door")), str(whereis("fx_events"))]
        """,
}

DOOR_V1 = """
    __vsn__ = "1"
    from relhandler.runtime import gen_statem

    CODE = "1234"
    TICK = 0.05

    def start_link():
        return gen_statem.start_link(__name__, None, name="fx_door")

    def callback_mode():
        return ["state_functions", "state_enter"]

    def init(args):
        return ("ok", "locked", {"opens": 0, "ticks": 0, "wrong": 0},
                [(("timeout", "tick"), TICK, None)])

    def locked(etype, content, data):
        if etype == "enter":
            return "keep_state_and_data"
        if etype == "cast" and content == CODE:
            return ("next_state", "open", {**data, "opens": data["opens"] + 1})
        if etype == "cast":
            return ("keep_state", {**data, "wrong": data["wrong"] + 1})
        return common(etype, "locked", data)

    def open(etype, content, data):
        if etype == "enter":
            return ("keep_state_and_data", [("state_timeout", 3600, "lock")])
        if etype == "state_timeout" or (etype == "cast" and content == "lock"):
            return ("next_state", "locked", data)
        return common(etype, "open", data)

    def common(etype, state, data):
        if etype == ("timeout", "tick"):
            return ("keep_state", {**data, "ticks": data["ticks"] + 1},
                    [(("timeout", "tick"), TICK, None)])
        if isinstance(etype, tuple) and etype[0] == "call":
            return ("keep_state_and_data",
                    [("reply", etype[1], {"vsn": 1, "state": state, **data})])
        return "keep_state_and_data"
    """

# v2: another callback mode, upper-case state names, a log in the data
DOOR_V2 = """
    __vsn__ = "2"
    from relhandler.runtime import gen_statem

    CODE = "1234"
    TICK = 0.05

    def start_link():
        return gen_statem.start_link(__name__, None, name="fx_door")

    def callback_mode():
        return ["handle_event_function", "state_enter"]

    def init(args):
        return ("ok", "LOCKED", {"opens": 0, "ticks": 0, "wrong": 0, "log": []},
                [(("timeout", "tick"), TICK, None)])

    def handle_event(etype, content, state, data):
        if etype == "enter":
            if state == "OPEN":
                return ("keep_state_and_data", [("state_timeout", 3600, "lock")])
            return "keep_state_and_data"
        if etype == ("timeout", "tick"):
            return ("keep_state", {**data, "ticks": data["ticks"] + 1},
                    [(("timeout", "tick"), TICK, None)])
        if etype == "cast" and state == "LOCKED" and content == CODE:
            return ("next_state", "OPEN",
                    {**data, "opens": data["opens"] + 1, "log": data["log"] + ["opened"]})
        if etype == "cast" and state == "LOCKED":
            return ("keep_state",
                    {**data, "wrong": data["wrong"] + 1, "log": data["log"] + ["wrong"]})
        if (etype == "cast" and content == "lock") or etype == "state_timeout":
            return ("next_state", "LOCKED", {**data, "log": data["log"] + ["locked"]})
        if isinstance(etype, tuple) and etype[0] == "call":
            return ("keep_state_and_data",
                    [("reply", etype[1], {"vsn": 2, "state": state, **data})])
        return "keep_state_and_data"

    def code_change(old_vsn, state, data, extra):
        if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
            return ("ok", state.lower(), {k: v for k, v in data.items() if k != "log"})
        return ("ok", state.upper(), {**data, "log": [extra["note"]]})
    """

HANDLER_V1 = """
    __vsn__ = "1"

    def init(args):
        return ("ok", {"count": 0})

    def handle_event(ev, s):
        return ("ok", {**s, "count": s["count"] + 1})

    def handle_call(req, s):
        return ("ok", {"vsn": 1, **s}, s)
    """

HANDLER_V2 = """
    __vsn__ = "2"

    def init(args):
        return ("ok", {"count": 0, "seen": []})

    def handle_event(ev, s):
        return ("ok", {**s, "count": s["count"] + 1, "seen": (s["seen"] + [ev])[-3:]})

    def handle_call(req, s):
        return ("ok", {"vsn": 2, **s}, s)

    def code_change(old_vsn, s, extra):
        if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
            return ("ok", {"count": s["count"]})
        return ("ok", {**s, "seen": list(extra["seen"])})
    """

APPUP_V2 = """
version = "2.0.0"

[[up]]
from = "1.0.0"
instructions = [
  ["update", "fx_sm.door", { change = "advanced", extra = { note = "upgraded" } }],
  ["update", "fx_sm.counter_handler", { change = "advanced", extra = { seen = ["v1"] } }],
]

[[down]]
to = "1.0.0"
instructions = [
  ["update", "fx_sm.counter_handler", { change = "advanced" }],
  ["update", "fx_sm.door", { change = "advanced" }],
]
"""

APPUP_V1 = 'version = "1.0.0"\nup = []\ndown = []\n'

# 3.0.0: the machine's code_change refuses v1 data: the preflight must catch it
DOOR_V3 = DOOR_V2.replace('__vsn__ = "2"', '__vsn__ = "3"').replace(
    '        return ("ok", state.upper(), {**data, "log": [extra["note"]]})',
    '        raise ValueError("door cannot migrate %r" % (state,))',
)
# 4.0.0: the handler's async code_change fails for real, after the machine has migrated:
# the install must roll both back, by value. It passes its first call (the preflight's
# trial) and fails the next (the install's): a failure no trial could foresee. The count
# lives in sys, shared by the preflight's scratch copy of the module and the loaded one.
HANDLER_V4 = HANDLER_V2.replace('__vsn__ = "2"', '__vsn__ = "4"').replace(
    "    def code_change(old_vsn, s, extra):",
    "    async def code_change(old_vsn, s, extra):\n"
    "        import sys\n"
    '        n = sys.__dict__["_fx_handler_cc"] = sys.__dict__.get("_fx_handler_cc", 0) + 1\n'
    "        if n > 1:\n"
    '            raise RuntimeError("handler cannot migrate")',
)


def appup(vsn: str) -> str:
    return APPUP_V2.replace('version = "2.0.0"', f'version = "{vsn}"')


def write_project(d: Path, vsn: str) -> None:
    (d / "pyproject.toml").parent.mkdir(parents=True, exist_ok=True)
    (d / "pyproject.toml").write_text(PYPROJECT.format(vsn=vsn))
    src = d / "src" / "fx_sm"
    src.mkdir(parents=True)
    files = dict(COMMON)
    files["door.py"] = {"1.0.0": DOOR_V1, "3.0.0": DOOR_V3}.get(vsn, DOOR_V2)
    files["counter_handler.py"] = {"1.0.0": HANDLER_V1, "4.0.0": HANDLER_V4}.get(vsn, HANDLER_V2)
    for name, text in files.items():
        (src / name).write_text(textwrap.dedent(text).lstrip())
    (src / "fx_sm.appup.toml").write_text(APPUP_V1 if vsn == "1.0.0" else appup(vsn))


def j(*args: str) -> Any:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rpc(root: Path, target: str, *args: Any) -> Any:
    mod, fun = target.split(":")
    with Client(root) as c:
        return c.call("rpc", {"module": mod, "function": fun, "args": list(args)})


def wait_for(pred: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fx_sm-{1,2,3,4}.0.0.tar.gz``, each with a relup from 1.0.0."""
    work = tmp_path_factory.mktemp("fx_sm")
    out = work / "rel"
    for vsn in ("1.0.0", "2.0.0", "3.0.0", "4.0.0"):
        proj = work / f"p{vsn}"
        write_project(proj, vsn)
        cli("build", "--project", str(proj), "--out", str(out), check=True)
        if vsn != "1.0.0":
            rel = str(out / "fx_sm")
            cli("relup", "--to", vsn, "--from", "1.0.0", "--rel-dir", rel, check=True)
    return out


def deployed(tmp_path: Path, out: Path, nodes: list[NodeProc]) -> Path:
    root = tmp_path / "root"
    j("deploy", str(out / "fx_sm-1.0.0.tar.gz"), "--root", str(root))
    nodes.append(start_node(root))
    return root


def test_gen_statem_and_gen_event_upgrade_live_and_downgrade(
    tmp_path: Path, builds: Path, nodes: list[NodeProc]
) -> None:
    out = builds
    root = deployed(tmp_path, out, nodes)

    pids = rpc(root, "fx_sm.api:pids")
    rpc(root, "fx_sm.api:push", "0000")
    rpc(root, "fx_sm.api:push", "1234")
    for i in range(3):
        rpc(root, "fx_sm.api:notify", f"e{i}")
    d1 = rpc(root, "fx_sm.api:door")
    assert d1["vsn"] == 1 and d1["state"] == "open" and d1["opens"] == 1 and d1["wrong"] == 1
    wait_for(lambda: rpc(root, "fx_sm.api:door")["ticks"] >= 3)  # the generic timeout runs
    assert rpc(root, "fx_sm.api:handler") == {"vsn": 1, "count": 3}
    st = rpc(root, "fx_sm.api:states")
    assert st["door"][0] == "open"
    assert st["events"] == [["fx_sm.counter_handler", None, {"count": 3}]]
    assert st["modules"] == ["fx_sm.counter_handler"]
    assert sorted(st["timeouts"]) == ["'state_timeout'", "('timeout', 'tick')"]

    # events keep flowing to the manager during both installs: none may be lost
    sent: list[Any] = []
    stop = threading.Event()

    def load() -> None:
        with Client(root) as c:
            k = 0
            while not stop.is_set():
                try:
                    c.call(
                        "rpc",
                        {"module": "fx_sm.api", "function": "notify", "args": [f"load{k}"]},
                    )
                    sent.append("ok")
                except Exception as e:
                    sent.append(e)
                k += 1

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(0.2)
        up = j("upgrade", str(out / "fx_sm-2.0.0.tar.gz"), "--root", str(root))
        assert up["install"]["mode"] == "up"
        assert rpc(root, "fx_sm.api:pids") == pids  # same processes, migrated in place
        st = rpc(root, "fx_sm.api:states")
        door_state, door_data = st["door"]
        assert door_state == "OPEN"  # code_change renamed the state
        assert door_data["log"] == ["upgraded"] and door_data["opens"] == 1
        assert sorted(st["timeouts"]) == ["'state_timeout'", "('timeout', 'tick')"]
        h = rpc(root, "fx_sm.api:handler")
        # migrated: v2's handle_event needs "seen" (without it the handler would crash)
        assert h["vsn"] == 2 and h["count"] >= 3 and isinstance(h["seen"], list)
        # the load's events reach the new handler code, on the migrated state
        wait_for(lambda: rpc(root, "fx_sm.api:handler")["seen"][-1].startswith("load"))
        ticks = door_data["ticks"]
        wait_for(lambda: rpc(root, "fx_sm.api:door")["ticks"] > ticks)  # timer survived
        rpc(root, "fx_sm.api:push", "lock")
        d2 = rpc(root, "fx_sm.api:door")
        assert d2["vsn"] == 2 and d2["state"] == "LOCKED"
        assert d2["log"] == ["upgraded", "locked"]

        down = j("downgrade", "1.0.0", "--root", str(root))
        assert down["install"]["mode"] == "down"
        assert rpc(root, "fx_sm.api:pids") == pids
        st = rpc(root, "fx_sm.api:states")
        assert st["door"][0] == "locked"
        assert "log" not in st["door"][1] and st["door"][1]["opens"] == 1
        h = rpc(root, "fx_sm.api:handler")
        assert h["vsn"] == 1 and set(h) == {"vsn", "count"}
        rpc(root, "fx_sm.api:push", "1234")
        assert rpc(root, "fx_sm.api:door")["state"] == "open"  # v1's state function
    finally:
        stop.set()
        t.join(30)
    assert sent and [r for r in sent if r != "ok"] == []
    # every event reached the handler exactly once, through v1, v2 and v1 again
    assert rpc(root, "fx_sm.api:handler")["count"] == 3 + len(sent)


def opened(root: Path) -> Any:
    """Drive the v1 machine and manager to a known state; returns sys.get_state of both."""
    rpc(root, "fx_sm.api:push", "0000")
    rpc(root, "fx_sm.api:push", "1234")
    for i in range(3):
        rpc(root, "fx_sm.api:notify", f"e{i}")
    st = rpc(root, "fx_sm.api:states")
    assert st["door"][0] == "open" and st["events"][0][2] == {"count": 3}
    return st


def frozen(st: Any) -> Any:
    """The states without the tick counter (the generic timeout keeps it moving)."""
    door_state, door_data = st["door"]
    return [door_state, {k: v for k, v in door_data.items() if k != "ticks"}, st["events"]]


def test_preflight_refuses_a_failing_gen_statem_code_change(
    tmp_path: Path, builds: Path, nodes: list[NodeProc]
) -> None:
    root = deployed(tmp_path, builds, nodes)
    before = opened(root)
    door_pid = rpc(root, "fx_sm.api:pids")[0]
    j("unpack", str(builds / "fx_sm-3.0.0.tar.gz"), "--root", str(root))
    r = cli("install", "3.0.0", "--root", str(root), "--json")
    assert r.returncode == 1
    failures = json.loads(r.stdout)["error"]["details"]["failures"]
    assert [(f["pid"], f["module"]) for f in failures] == [(door_pid, "fx_sm.door")]
    assert "door cannot migrate 'open'" in failures[0]["error"]
    assert frozen(rpc(root, "fx_sm.api:states")) == frozen(before)  # nothing changed
    assert rpc(root, "fx_sm.api:door")["vsn"] == 1


def test_failing_handler_code_change_rolls_both_back_by_value(
    tmp_path: Path, builds: Path, nodes: list[NodeProc]
) -> None:
    root = deployed(tmp_path, builds, nodes)
    before = opened(root)
    pids = rpc(root, "fx_sm.api:pids")
    j("unpack", str(builds / "fx_sm-4.0.0.tar.gz"), "--root", str(root))
    r = cli("install", "4.0.0", "--root", str(root), "--json")
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert "handler cannot migrate" in err["message"] and "rolled back" in err["message"]
    assert err["details"]["module"] == "fx_sm.counter_handler"
    # the machine had migrated (v4's door code_change succeeded) and is back, by value
    assert frozen(rpc(root, "fx_sm.api:states")) == frozen(before)
    assert rpc(root, "fx_sm.api:pids") == pids
    assert rpc(root, "fx_sm.api:door")["vsn"] == 1
    rpc(root, "fx_sm.api:notify", "after")  # resumed, on v1 code
    assert rpc(root, "fx_sm.api:handler") == {"vsn": 1, "count": 4}
    rpc(root, "fx_sm.api:push", "lock")
    assert rpc(root, "fx_sm.api:door")["state"] == "locked"


def test_appup_generate_proposes_advanced_updates_for_machine_and_handler(
    builds: Path,
) -> None:
    import tomllib

    r = cli(
        "appup", "generate", "--from", "1.0.0", "--to", "2.0.0",
        "--rel-dir", str(builds / "fx_sm"), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    appup = tomllib.loads(json.loads(r.stdout)["fx_sm"])
    for section in (appup["up"][0], appup["down"][0]):
        assert sorted((i[0], i[1], i[2]["change"]) for i in section["instructions"]) == [
            ("update", "fx_sm.counter_handler", "advanced"),
            ("update", "fx_sm.door", "advanced"),
        ]
