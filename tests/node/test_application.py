"""The application controller on an in-process node (runtime.md *Applications*, issue 4).

Callbacks record what happened in a list passed through the app's own env (env values are
plain Python objects in process), so each test can assert the exact order of events.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from relhandler.errors import ProcessError
from relhandler.release.model import AppSpec
from relhandler.runtime import Node, Pid, exit, gen_server, send, supervisor
from relhandler.runtime.application import AppController

from .conftest import CodeDir, until

APP = """
from relhandler.runtime import current_node, supervisor

NAME = {name!r}

def _log(*what):
    current_node().apps.get_env(NAME, "events").append(what)

async def start():
    _log("start", NAME)
    return await supervisor.start_link({sup!r}, None)

def prep_stop():
    _log("prep_stop", NAME)

def stop(state):
    _log("stop", NAME)

def config_change(changed, new, removed):
    _log("config_change", NAME, changed, new, removed)
"""

SUP = """
def init(args):
    return ("ok", ({{"strategy": "one_for_one", "intensity": 1, "period": 5}}, [
        {{"id": "w", "start": ({worker!r}, "start_link", []), "modules": [{worker!r}]}},
    ]))
"""

WORKER = """
from relhandler.runtime import current_node, gen_server, trap_exit

NAME = {name!r}

def start_link():
    return gen_server.start_link(__name__, None)

def init(args):
    trap_exit(True)
    return ("ok", None)

def handle_call(req, from_, state):
    return ("reply", current_node().apps.get_env(NAME, req), state)

def terminate(reason, state):
    current_node().apps.get_env(NAME, "events").append(("terminate", NAME, reason))
"""

# a start callback whose "top supervisor" is a raw process that exits with what it is sent
RAW = """
from relhandler.runtime import receive, spawn, Exit

async def _top():
    reason = await receive()
    raise Exit(reason)

def start():
    return ("ok", spawn(_top))
"""


class Apps:
    """Writes uniquely named application packages to a code dir and builds their specs."""

    def __init__(self, code_dir: CodeDir) -> None:
        self.code_dir = code_dir
        self.events: list[tuple[Any, ...]] = []

    def name(self, base: str) -> str:
        return self.code_dir.name(base)

    def write_pkg(self, base: str, files: dict[str, str]) -> str:
        pkg = self.code_dir.root / self.name(base)
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        for mod, src in files.items():
            (pkg / f"{mod}.py").write_text(textwrap.dedent(src))
        return self.name(base)

    def spec(
        self, base: str, *, needs: tuple[str, ...] = (), env: dict[str, Any] | None = None
    ) -> AppSpec:
        name = self.name(base)
        pkg = self.write_pkg(
            base,
            {
                "app": APP.format(name=name, sup=f"{name}.sup"),
                "sup": SUP.format(worker=f"{name}.worker"),
                "worker": WORKER.format(name=name),
            },
        )
        return AppSpec(
            name,
            "1.0.0",
            (pkg, f"{pkg}.app", f"{pkg}.sup", f"{pkg}.worker"),
            tuple(self.name(n) for n in needs),
            f"{pkg}.app:start",
            {"events": self.events, **(env or {})},
            description=f"app {base}",
        )

    def raw_spec(self, base: str) -> AppSpec:
        pkg = self.write_pkg(base, {"app": RAW})
        return AppSpec(pkg, "0.1", (pkg, f"{pkg}.app"), (), f"{pkg}.app:start")

    def names(self, events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Events with the test's unique prefix taken off app names, for readable asserts."""
        p = self.code_dir.prefix
        return [
            tuple(x[len(p) :] if isinstance(x, str) and x.startswith(p) else x for x in e)
            for e in events
        ]


@pytest.fixture
def apps(code_dir: CodeDir) -> Apps:
    return Apps(code_dir)


def _controller(node: Node, code_dir: CodeDir, **kw: Any) -> AppController:
    node.code.set_path([code_dir.root])
    return AppController(node, **kw)


async def test_dependency_order_start_and_reverse_stop(apps: Apps) -> None:
    async with Node() as node:
        ctl = _controller(node, apps.code_dir)
        specs = [apps.spec("c", needs=("b",)), apps.spec("b", needs=("a",)), apps.spec("a")]
        for s in specs:
            ctl.load(s)
        order = ctl.start_order([s.name for s in specs])
        assert [apps.names([(n,)])[0][0] for n in order] == ["a", "b", "c"]
        for n in order:
            await ctl.start(n)
        assert [(apps.names([(n,)])[0][0], d, v) for n, d, v in ctl.which_applications()] == [
            ("c", "app c", "1.0.0"),
            ("b", "app b", "1.0.0"),
            ("a", "app a", "1.0.0"),
        ]
        tops = [ctl.top_supervisor(n) for n in order]
        assert all(isinstance(t, Pid) and t in node.processes for t in tops)
        apps.events.clear()
        await ctl.stop_all()
        assert apps.names(apps.events) == [
            ("prep_stop", "c"),
            ("terminate", "c", "shutdown"),
            ("stop", "c"),
            ("prep_stop", "b"),
            ("terminate", "b", "shutdown"),
            ("stop", "b"),
            ("prep_stop", "a"),
            ("terminate", "a", "shutdown"),
            ("stop", "a"),
        ]
        assert ctl.which_applications() == []
        assert all(t not in node.processes for t in tops)


async def test_start_needs_dependencies_running(apps: Apps) -> None:
    async with Node() as node:
        ctl = _controller(node, apps.code_dir)
        a, b = apps.spec("a"), apps.spec("b", needs=("a",))
        ctl.load(a)
        ctl.load(b)
        with pytest.raises(ProcessError, match=f"needs '{a.name}' started first") as ei:
            await ctl.start(b.name)
        assert ei.value.code == "not_started"
        assert ctl.which_applications() == [] and apps.events == []


async def test_dependency_cycle_is_an_error(apps: Apps) -> None:
    async with Node() as node:
        ctl = _controller(node, apps.code_dir)
        ctl.load(apps.spec("a", needs=("b",)))
        ctl.load(apps.spec("b", needs=("a",)))
        with pytest.raises(ProcessError, match="dependency cycle"):
            ctl.start_order([apps.name("a"), apps.name("b")])


@pytest.mark.parametrize(
    ("type_", "reason", "fatal"),
    [
        pytest.param("permanent", "normal", True, id="permanent-normal"),
        pytest.param("permanent", "crash", True, id="permanent-crash"),
        pytest.param("transient", "normal", False, id="transient-normal"),
        pytest.param("transient", "shutdown", True, id="transient-shutdown"),  # OTP
        pytest.param("transient", "crash", True, id="transient-crash"),
        pytest.param("temporary", "crash", False, id="temporary-crash"),
    ],
)
async def test_start_types_decide_whether_an_exit_stops_the_node(
    apps: Apps, type_: str, reason: str, fatal: bool
) -> None:
    async with Node() as node:
        exits: list[tuple[str, Any]] = []
        ctl = _controller(node, apps.code_dir, on_permanent_exit=lambda a, r: exits.append((a, r)))
        spec = apps.raw_spec("raw")
        ctl.load(spec)
        await ctl.start(spec.name, type_)
        top = ctl.top_supervisor(spec.name)
        assert top is not None
        send(top, reason)
        await until(lambda: spec.name not in ctl.running)
        assert exits == ([(spec.name, reason)] if fatal else [])
        assert ctl.which_applications() == []


async def test_killed_top_supervisor_of_permanent_app(apps: Apps) -> None:
    async with Node() as node:
        exits: list[tuple[str, Any]] = []
        ctl = _controller(node, apps.code_dir, on_permanent_exit=lambda a, r: exits.append((a, r)))
        spec = apps.spec("a")
        ctl.load(spec)
        await ctl.start(spec.name)
        top = ctl.top_supervisor(spec.name)
        assert top is not None
        exit(top, "kill")
        await until(lambda: bool(exits))
        assert exits == [(spec.name, "killed")]


async def test_stopping_an_app_is_not_an_exit(apps: Apps) -> None:
    async with Node() as node:
        exits: list[Any] = []
        ctl = _controller(node, apps.code_dir, on_permanent_exit=lambda a, r: exits.append(a))
        spec = apps.spec("a")
        ctl.load(spec)
        await ctl.start(spec.name)
        await ctl.start(spec.name)  # already running: nothing happens
        assert apps.names(apps.events) == [("start", "a")]
        await ctl.stop(spec.name)
        await ctl.stop(spec.name)  # already stopped: nothing happens
        assert exits == []
        assert apps.names(apps.events)[-1] == ("stop", "a")


async def test_env_defaults_overrides_get_and_set(apps: Apps) -> None:
    async with Node() as node:
        ctl = _controller(node, apps.code_dir)
        spec = apps.spec("a", env={"port": 1, "greeting": "hi"})
        ctl.load(spec, {"port": 2})  # sys.toml overrides the app.toml default
        await ctl.start(spec.name)
        assert ctl.get_env(spec.name, "port") == 2
        assert ctl.get_env(spec.name, "greeting") == "hi"
        assert ctl.get_env(spec.name, "missing", "dflt") == "dflt"
        assert ctl.get_env("no_such_app", "port") is None
        ctl.set_env(spec.name, "greeting", "hello")
        # a running process sees the new value on its next read
        sup = ctl.top_supervisor(spec.name)
        assert sup is not None
        (child,) = await supervisor.which_children(sup)
        assert child.pid is not None
        assert await gen_server.call(child.pid, "greeting") == "hello"
        with pytest.raises(ProcessError, match="it is not loaded") as ei:
            ctl.set_env("no_such_app", "k", 1)
        assert ei.value.code == "not_loaded"


async def test_config_change_gets_changed_new_and_removed(apps: Apps) -> None:
    async with Node() as node:
        ctl = _controller(node, apps.code_dir)
        a = apps.spec("a", env={"port": 1, "old": True, "same": 0})
        b = apps.spec("b", env={"k": 1})  # loaded, not running: env changes, no callback
        ctl.load(a)
        ctl.load(b)
        await ctl.start(a.name)
        apps.events.clear()
        await ctl.change_config(
            {
                a.name: {"events": apps.events, "port": 2, "same": 0, "fresh": "x"},
                b.name: {"events": apps.events, "k": 2},
            }
        )
        assert apps.names(apps.events) == [
            ("config_change", "a", {"port": 2}, {"fresh": "x"}, ["old"])
        ]
        assert ctl.get_env(a.name, "old") is None and ctl.get_env(a.name, "fresh") == "x"
        assert ctl.get_env(b.name, "k") == 2
        apps.events.clear()
        await ctl.change_config({a.name: ctl.all_env(a.name)})  # nothing changed: no call
        assert apps.events == []


async def test_unload_only_when_stopped(apps: Apps) -> None:
    async with Node() as node:
        ctl = _controller(node, apps.code_dir)
        spec = apps.spec("a")
        ctl.load(spec)
        await ctl.start(spec.name)
        with pytest.raises(ProcessError, match="stop it before unloading"):
            ctl.unload(spec.name)
        await ctl.stop(spec.name)
        ctl.unload(spec.name)
        with pytest.raises(ProcessError, match="is not loaded") as ei:
            await ctl.start(spec.name)
        assert ei.value.code == "not_loaded"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("def start():\n    return 42\n", "returned 42; it must return", id="not-pid"),
        pytest.param(
            "def start():\n    raise OSError('port in use')\n",
            "failed to start: .* raised OSError: port in use",
            id="raises",
        ),
    ],
)
async def test_bad_start_callback_is_a_typed_error_and_app_not_running(
    apps: Apps, source: str, message: str
) -> None:
    async with Node() as node:
        ctl = _controller(node, apps.code_dir)
        pkg = apps.write_pkg("bad", {"app": source})
        ctl.load(AppSpec(pkg, "1", (pkg, f"{pkg}.app"), (), f"{pkg}.app:start"))
        with pytest.raises(ProcessError, match=message) as ei:
            await ctl.start(pkg)
        assert ei.value.code == "start_failed"
        assert ctl.which_applications() == [] and pkg not in ctl.running


async def test_bad_start_type_refused(apps: Apps) -> None:
    async with Node() as node:
        ctl = _controller(node, apps.code_dir)
        spec = apps.spec("a")
        ctl.load(spec)
        with pytest.raises(ProcessError, match="bad start type 'forever'"):
            await ctl.start(spec.name, "forever")
        assert apps.events == []


async def test_app_without_start_callback_is_a_library(apps: Apps) -> None:
    async with Node() as node:
        ctl = _controller(node, apps.code_dir)
        ctl.load(AppSpec(apps.name("lib"), "2.0", (), (), None, description="a library"))
        await ctl.start(apps.name("lib"))
        assert ctl.which_applications() == [(apps.name("lib"), "a library", "2.0")]
        assert ctl.top_supervisor(apps.name("lib")) is None
        await ctl.stop_all()
        assert ctl.which_applications() == []
