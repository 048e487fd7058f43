"""The application controller: load, start and stop applications in dependency order.

An application is a package of managed modules plus metadata (the release layer's ``AppSpec``;
any object with the same attributes works, so the runtime does not import the release layer).
Its optional ``start`` callback (``"pkg.app:start"``) returns the pid of its top supervisor
(or ``("ok", pid)``, or ``("ok", pid, state)``); the same module may define ``stop(state)``
(given that state, None if start returned none), ``prep_stop(state)`` (returns the state
for ``stop``; ``prep_stop()`` also works) and ``config_change(changed, new, removed)``.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from relhandler.errors import ProcessError, RelhandlerError
from relhandler.runtime._kernel import Node, Pid

__all__ = ["AppController", "AppLike", "RunningApp"]

log = logging.getLogger("relhandler.runtime.application")

START_TYPES = ("permanent", "transient", "temporary")


class AppLike(Protocol):
    """What the controller needs to know about an application."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def modules(self) -> Sequence[str]: ...
    @property
    def applications(self) -> Sequence[str]: ...
    @property
    def start(self) -> str | None: ...
    @property
    def env(self) -> Mapping[str, Any]: ...
    @property
    def description(self) -> str: ...


@dataclass(slots=True)
class RunningApp:
    """A started application: its start type and top supervisor (``None`` if it has none)."""

    name: str
    type: str
    top: Pid | None
    watch: int | None = None
    state: Any = None  # what start returned beside the pid (``("ok", pid, state)``)


@dataclass(slots=True)
class _Loaded:
    spec: AppLike
    env: dict[str, Any] = field(default_factory=dict)


class AppController:
    """``node.apps``: the applications of the running release."""

    def __init__(self, node: Node, *, on_permanent_exit: Callable[[str, Any], None] | None = None):
        self.node = node
        self.loaded: dict[str, _Loaded] = {}
        self.running: dict[str, RunningApp] = {}
        self.order: list[str] = []  # start order
        self.on_permanent_exit = on_permanent_exit
        # the pid the controller acts as when it signals a top supervisor (no real process)
        self.master = Pid(0, node.node_id)
        node.apps = self

    # -- metadata ----------------------------------------------------------------
    def load(self, spec: AppLike, env_overrides: Mapping[str, Any] | None = None) -> None:
        """Load (or replace) an application's spec and env (defaults + sys.toml overrides)."""
        env = dict(spec.env)
        env.update(env_overrides or {})
        self.loaded[spec.name] = _Loaded(spec, env)

    def unload(self, name: str) -> None:
        """Forget a stopped application's spec and env (its modules stay loaded, as in OTP)."""
        if name in self.running:
            raise ProcessError(f"application {name!r} is running; stop it before unloading")
        self.loaded.pop(name, None)

    def spec(self, name: str) -> AppLike:
        """The loaded spec of ``name``; ``ProcessError`` (``not_loaded``) if there is none."""
        try:
            return self.loaded[name].spec
        except KeyError:
            raise ProcessError(f"application {name!r} is not loaded", code="not_loaded") from None

    def get_env(self, app: str, key: str, default: Any = None) -> Any:
        """``app``'s env value for ``key`` (``default`` if unset or the app is not loaded)."""
        la = self.loaded.get(app)
        return default if la is None else la.env.get(key, default)

    def all_env(self, app: str) -> dict[str, Any]:
        """A copy of ``app``'s whole env (empty if it is not loaded)."""
        la = self.loaded.get(app)
        return {} if la is None else dict(la.env)

    def set_env(self, app: str, key: str, value: Any) -> None:
        """Set one env value of a loaded application (no ``config_change`` call, as in OTP)."""
        la = self.loaded.get(app)
        if la is None:
            raise ProcessError(
                f"cannot set env {key!r} of application {app!r}: it is not loaded",
                code="not_loaded",
            )
        la.env[key] = value

    def which_applications(self) -> list[tuple[str, str, str]]:
        """Running applications as ``(name, description, version)``, most recent first."""
        return [
            (n, self.loaded[n].spec.description, self.loaded[n].spec.version)
            for n in reversed(self.order)
            if n in self.loaded
        ]

    def top_supervisor(self, app: str) -> Pid | None:
        """The pid its start callback returned, while the application runs."""
        r = self.running.get(app)
        return None if r is None else r.top

    def start_order(self, names: Sequence[str]) -> list[str]:
        """``names`` sorted so every app comes after the apps it needs (stable otherwise)."""
        out: list[str] = []
        visiting: set[str] = set()

        def visit(n: str) -> None:
            if n in out:
                return
            if n in visiting:
                raise ProcessError(f"application dependency cycle through {n!r}")
            visiting.add(n)
            la = self.loaded.get(n)
            for dep in la.spec.applications if la else ():
                if dep in names:
                    visit(dep)
            visiting.discard(n)
            out.append(n)

        for n in names:
            visit(n)
        return out

    # -- lifecycle ---------------------------------------------------------------
    def _start_module(self, name: str) -> tuple[types.ModuleType, str] | None:
        spec = self.spec(name)
        if not spec.start:
            return None
        mod, _, fun = spec.start.partition(":")
        return self.node.code.current(mod), fun or "start"

    async def start(self, name: str, type: str = "permanent") -> None:
        """Start an application whose dependencies are running (OTP: ``application:start``)."""
        if type not in START_TYPES:
            raise ProcessError(f"bad start type {type!r}; use one of {', '.join(START_TYPES)}")
        if name in self.running:
            return
        spec = self.spec(name)
        missing = [d for d in spec.applications if d not in self.running]
        if missing:
            raise ProcessError(
                f"application {name!r} needs {missing[0]!r} started first", code="not_started"
            )
        top: Pid | None = None
        app_state: Any = None
        sm = self._start_module(name)
        if sm is not None:
            mod, fun = sm
            try:
                r = await _maybe(getattr(mod, fun)())
            except Exception as e:
                root = _root_cause(e)
                if root is not e and isinstance(root, RelhandlerError):
                    # deep in the tree (a child of a child failed to start): its own error,
                    # with its code and exit code (a ConfigError is bad input)
                    raise _restated(root, f"application {name!r} failed to start: {root}") from e
                raise ProcessError(
                    f"application {name!r} failed to start: {spec.start} raised "
                    f"{e.__class__.__name__}: {e}",
                    code="start_failed",
                ) from e
            if isinstance(r, tuple) and len(r) == 3 and r[0] == "ok":
                app_state = r[2]
            if isinstance(r, tuple) and len(r) >= 2 and r[0] == "ok":
                r = r[1]
            if r is not None and not isinstance(r, Pid):
                raise ProcessError(
                    f"application {name!r}: {spec.start} returned {r!r}; "
                    f"it must return the top supervisor's pid (or ('ok', pid), or None)",
                    code="start_failed",
                )
            top = r
        ra = RunningApp(name, type, top, state=app_state)
        if top is not None and top in self.node.processes:
            tp = self.node.processes[top]
            ra.watch = tp.add_watcher(lambda reason: self._top_exited(name, reason))
            if getattr(tp.sys, "parent", False) is None:
                # OTP: the application master is the top supervisor's parent; its shutdown
                # signal (sent by stop, from the master's pid) ends the supervisor as a
                # parent's EXIT does, while an EXIT from an unknown pid is ignored
                tp.sys.parent = self.master
        self.running[name] = ra
        self.order.append(name)
        log.info("application %s %s started (%s)", name, spec.version, type)

    def _top_exited(self, name: str, reason: Any) -> None:
        ra = self.running.pop(name, None)
        if name in self.order:
            self.order.remove(name)
        if ra is None:
            return
        log.error("application %s exited: %r (type %s)", name, reason, ra.type)
        # OTP: for a transient application only `normal` is a normal exit (a top supervisor
        # that reached its restart intensity exits with `shutdown`: abnormal)
        normal = reason == "normal"
        fatal = ra.type == "permanent" or (ra.type == "transient" and not normal)
        if fatal and self.on_permanent_exit is not None:
            self.on_permanent_exit(name, reason)

    async def stop(self, name: str) -> None:
        """Stop an application: ``prep_stop``, its top supervisor shut down, ``stop``."""
        ra = self.running.pop(name, None)
        if name in self.order:
            self.order.remove(name)
        if ra is None:
            return
        sm = self._start_module(name)
        state = ra.state
        if sm is not None and hasattr(sm[0], "prep_stop"):
            # OTP's prep_stop(State) -> State; a prep_stop() taking nothing is also accepted
            fn = sm[0].prep_stop
            if _arity(fn) >= 1:
                state = await _maybe(fn(state))
            else:
                await _maybe(fn())
        if ra.top is not None:
            p = self.node.processes.get(ra.top)
            if p is not None:
                if ra.watch is not None:
                    p.remove_watcher(ra.watch)
                self.node._signal(p, self.master, "shutdown", from_link=False)
                if p.task is not None:
                    done, _ = await asyncio.wait([p.task], timeout=30)
                    if not done:
                        self.node._kill(p, "killed")
                        await asyncio.wait([p.task])
        if sm is not None and hasattr(sm[0], "stop"):
            try:
                await _maybe(sm[0].stop(state))
            except Exception:
                log.exception("%s stop callback raised", name)
        log.info("application %s stopped", name)

    async def stop_all(self) -> None:
        """Stop every running application in reverse start order."""
        for name in list(reversed(self.order)):
            await self.stop(name)

    async def change_config(self, new_env: Mapping[str, Mapping[str, Any]]) -> None:
        """Install new env for each app and call ``config_change(changed, new, removed)``."""
        for name, la in self.loaded.items():
            if name not in new_env:
                continue
            old, new = la.env, dict(new_env[name])
            changed = {k: v for k, v in new.items() if k in old and old[k] != v}
            added = {k: v for k, v in new.items() if k not in old}
            removed = [k for k in old if k not in new]
            la.env = new
            if not (changed or added or removed) or name not in self.running:
                continue
            sm = self._start_module(name)
            if sm is not None and hasattr(sm[0], "config_change"):
                try:
                    await _maybe(sm[0].config_change(changed, added, removed))
                except Exception:
                    log.exception("%s config_change raised", name)


def _arity(fn: Any) -> int:
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 0


async def _maybe(r: Any) -> Any:
    if asyncio.iscoroutine(r):
        return await r
    return r


def _root_cause(e: BaseException) -> BaseException:
    """The innermost relhandler error on ``e``'s ``__cause__`` chain (a supervisor whose
    child failed to start chains the child's exception), or ``e``."""
    found, seen = e, 0
    while e.__cause__ is not None and seen < 100:
        e, seen = e.__cause__, seen + 1
        if isinstance(e, RelhandlerError):
            found = e
    return found


def _restated(err: RelhandlerError, message: str) -> RelhandlerError:
    """``err`` (same class, code, hint and details) with another message."""
    out = copy.copy(err)
    out.message = message
    out.args = (message,)
    return out
