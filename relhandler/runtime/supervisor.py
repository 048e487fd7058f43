"""Supervisor: starts, watches and restarts children, OTP-style.

The callback module's ``init(args)`` returns ``("ok", (flags, [child_spec, ...]))`` or
``"ignore"``::

    flags = {"strategy": "one_for_one", "intensity": 1, "period": 5}
    spec = {"id": "counter", "start": ("sample_app.counter", "start_link", []),
            "restart": "permanent", "shutdown": 5.0, "type": "worker",
            "modules": ["sample_app.counter"]}          # or "dynamic"

``shutdown`` is in seconds (an int or a float), ``"brutal_kill"``, or ``None`` /
``"infinity"`` (the default for supervisors). Strategies ``one_for_one``, ``one_for_all``,
``rest_for_one``, ``simple_one_for_one``.
More than ``intensity`` restarts within ``period`` seconds: the supervisor terminates its
children and exits with ``shutdown``. The release handler reads child specs' ``modules`` to
find which processes an upgrade of a module affects. Code change (``update M supervisor``)
re-runs the callback module's ``init`` and applies the new flags and specs by id, as OTP does.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from relhandler.errors import ProcessError
from relhandler.runtime import gen_server
from relhandler.runtime._kernel import Pid, current_node, current_process
from relhandler.runtime.process import trap_exit

__all__ = [
    "Child",
    "changed_state",
    "count_children",
    "delete_child",
    "get_callback_module",
    "peek_children",
    "peek_groups",
    "restart_child",
    "restore",
    "snapshot",
    "start",
    "start_child",
    "start_link",
    "terminate_child",
    "which_children",
]

log = logging.getLogger("relhandler.runtime.supervisor")

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
RESTARTS = ("permanent", "transient", "temporary")


@dataclass(frozen=True, slots=True)
class Child:
    """``which_children`` row: id, pid (None if not running), type, modules."""

    id: Any
    pid: Pid | None
    type: str
    modules: tuple[str, ...] | str


@dataclass(frozen=True, slots=True)
class _Spec:
    id: Any
    start: tuple[str, str, list[Any]]
    restart: str = "permanent"
    shutdown: float | str | None = 5.0
    type: str = "worker"
    modules: tuple[str, ...] | str = ()


@dataclass(slots=True, eq=False)  # identity: children are found by `is`
class _Child:
    spec: _Spec
    pid: Pid | None = None
    args: list[Any] | None = None  # simple_one_for_one: the full argument list
    restarting: bool = False  # a restart failed; a try_again_restart is queued (OTP)


@dataclass(slots=True)
class _State:
    module: str
    init_args: Any
    strategy: str = "one_for_one"
    intensity: int = 1
    period: float = 5.0
    children: list[_Child] = field(default_factory=list)
    restarts: deque[float] = field(default_factory=deque)


def _check_spec(raw: Any) -> _Spec:
    if not isinstance(raw, dict):
        raise ProcessError(f"child spec must be a dict, got {raw!r}", code="invalid_child_spec")
    unknown = set(raw) - {"id", "start", "restart", "shutdown", "type", "modules"}
    if unknown:
        raise ProcessError(
            f"child spec has unknown keys {sorted(unknown)}", code="invalid_child_spec"
        )
    if "id" not in raw or "start" not in raw:
        raise ProcessError(f"child spec needs 'id' and 'start': {raw!r}", code="invalid_child_spec")
    start = raw["start"]
    if not (isinstance(start, tuple | list) and len(start) == 3):
        raise ProcessError(
            f"child {raw['id']!r}: start must be (module, function, args), got {start!r}",
            code="invalid_mfa",
        )
    mod, fun, args = start
    restart = raw.get("restart", "permanent")
    if restart not in RESTARTS:
        raise ProcessError(
            f"child {raw['id']!r}: invalid restart {restart!r}", code="invalid_restart_type"
        )
    shutdown = raw.get("shutdown", 5.0 if raw.get("type", "worker") == "worker" else None)
    if shutdown == "infinity":
        shutdown = None
    if not (
        shutdown is None
        or shutdown == "brutal_kill"
        or (isinstance(shutdown, int | float) and not isinstance(shutdown, bool) and shutdown >= 0)
    ):
        raise ProcessError(
            f"child {raw['id']!r}: invalid shutdown {shutdown!r}; use seconds (a number "
            f">= 0), 'brutal_kill', or None/'infinity'",
            code="invalid_shutdown",
        )
    ctype = raw.get("type", "worker")
    if ctype not in ("worker", "supervisor"):
        raise ProcessError(
            f"child {raw['id']!r}: invalid type {ctype!r}", code="invalid_child_type"
        )
    mods = raw.get("modules", [mod])
    if mods != "dynamic":
        if not isinstance(mods, list | tuple) or not all(isinstance(m, str) for m in mods):
            raise ProcessError(
                f"child {raw['id']!r}: invalid modules {mods!r}", code="invalid_modules"
            )
        mods = tuple(mods)
    return _Spec(raw["id"], (str(mod), str(fun), list(args)), restart, shutdown, ctype, mods)


def _parse_init(module: str, result: Any) -> tuple[str, int, float, list[_Spec]]:
    """Check what ``init`` returned: ``(strategy, intensity, period, specs)``."""
    if not (
        isinstance(result, tuple)
        and len(result) == 2
        and result[0] == "ok"
        and isinstance(result[1], tuple | list)
        and len(result[1]) == 2
        and isinstance(result[1][0], dict)
        and isinstance(result[1][1], list | tuple)
    ):
        raise ProcessError(
            f"{module}.init returned {result!r}; expected ('ok', (flags, specs))",
            code="bad_return",
        )
    flags, specs = result[1]
    strategy = flags.get("strategy", "one_for_one")
    if strategy not in STRATEGIES:
        raise ProcessError(
            f"invalid strategy {strategy!r}; use one of {', '.join(STRATEGIES)}",
            code="invalid_strategy",
        )
    intensity = flags.get("intensity", 1)
    period = flags.get("period", 5)
    if not isinstance(intensity, int) or intensity < 0:
        raise ProcessError(f"invalid intensity {intensity!r}", code="invalid_intensity")
    if not isinstance(period, int | float) or period <= 0:
        raise ProcessError(f"invalid period {period!r}", code="invalid_period")
    checked = [_check_spec(s) for s in specs]
    ids = [s.id for s in checked]
    if len(set(map(repr, ids))) != len(ids):
        raise ProcessError(f"duplicate child ids in {ids!r}", code="duplicate_child_name")
    if strategy == "simple_one_for_one" and len(checked) != 1:
        raise ProcessError("simple_one_for_one needs exactly one child spec", code="bad_start_spec")
    return strategy, intensity, float(period), checked


def _apply_init(state: _State, result: Any) -> list[_Spec]:
    state.strategy, state.intensity, state.period, specs = _parse_init(state.module, result)
    return specs


def changed_state(state: Any, callback_module: Any) -> Any:
    """A supervisor's ``code_change``: a *new* state from ``callback_module.init``.

    OTP's rule: init is re-run with the original args; the new flags apply; specs are
    updated by id (a running child keeps its pid), ids only in the new specs are added but
    not started, ids no longer there are kept. ``init`` returning ``"ignore"`` changes
    nothing. The old state is not touched (the release handler keeps it to roll back to,
    and the preflight runs this on the live state). Returns ``("ok", new_state)``, or a
    coroutine of it when ``init`` is ``async``; raises ``ProcessError`` on invalid specs.
    """
    if not isinstance(state, _State):
        raise ProcessError(f"not a supervisor state: {type(state).__name__}")
    r = callback_module.init(state.init_args)
    if isinstance(r, types.CoroutineType):
        return _changed_async(state, r)
    return ("ok", _changed(state, r))


async def _second(coro: Any) -> Any:
    return (await coro)[1]


async def _changed_async(state: _State, coro: Any) -> Any:
    return ("ok", _changed(state, await coro))


def _changed(state: _State, result: Any) -> _State:
    if result == "ignore":
        return state
    strategy, intensity, period, specs = _parse_init(state.module, result)
    if (strategy == "simple_one_for_one") != (state.strategy == "simple_one_for_one"):
        raise ProcessError(
            f"{state.module}: cannot change to or from simple_one_for_one in code_change",
            code="bad_start_spec",
        )
    new = _State(state.module, state.init_args, strategy, intensity, period)
    new.restarts = deque(state.restarts)
    if strategy == "simple_one_for_one":
        # only the one spec is replaced; the running children stay, sharing the new template
        new.children = [_Child(specs[0])]
        new.children.extend(
            _Child(specs[0], c.pid, c.args, c.restarting) for c in state.children[1:]
        )
        return new
    by_id = {repr(s.id): s for s in specs}
    seen: set[str] = set()
    for c in state.children:
        k = repr(c.spec.id)
        seen.add(k)
        new.children.append(_Child(by_id.get(k, c.spec), c.pid, c.args, c.restarting))
    new.children.extend(_Child(s) for s in specs if repr(s.id) not in seen)
    return new


def snapshot(state: Any) -> Any:
    """A copy of a supervisor state by value (flags, specs, children and their pids) for
    the release handler's undo log (see :func:`restore`); specs are immutable once checked,
    so they are shared. For ``simple_one_for_one`` only the spec and flags (its 100,000
    children are not recorded); None for anything but a supervisor state."""
    if not isinstance(state, _State):
        return None
    new = _State(state.module, state.init_args, state.strategy, state.intensity, state.period)
    new.restarts = deque(state.restarts)
    if state.strategy == "simple_one_for_one":
        new.children = [_Child(state.children[0].spec)]  # the running children are not undone
    else:
        new.children = [_Child(c.spec, c.pid, c.args, c.restarting) for c in state.children]
    return new


def _module(mod: str) -> Any:
    """A managed module's current version, else an ordinary (runtime, library) module:
    a library such as relhandler.web supervises its own processes with fixed code."""
    node = current_node()
    if node.code._locate(mod) or node.code.is_loaded(mod):
        return node.code.current(mod)
    return __import__(mod, fromlist=["_"])


async def _start_spec(spec: _Spec, extra: Sequence[Any] = ()) -> Pid | None:
    mod, fun, args = spec.start
    target = _module(mod)
    r = getattr(target, fun)(*args, *extra)
    if isinstance(r, types.CoroutineType) or asyncio.isfuture(r):
        r = await r
    if r is None or r == "ignore":
        return None
    if isinstance(r, tuple) and len(r) == 2 and r[0] == "ok":
        r = r[1]
    if isinstance(r, tuple) and r and r[0] == "error":
        raise ProcessError(f"child {spec.id!r} failed to start: {r[1]!r}", code="start_failed")
    if not isinstance(r, Pid):
        raise ProcessError(
            f"child {spec.id!r} start returned {r!r}; expected a Pid", code="start_failed"
        )
    return r


async def _terminate(child: _Child) -> None:
    pid = child.pid
    child.pid = None
    if pid is None:
        return
    node = current_node()
    p = node.processes.get(pid)
    me = current_process()
    if me is not None:
        me.links.discard(pid)
        if p is not None:
            p.links.discard(me.pid)
    if p is None or p.task is None:
        return
    shutdown = child.spec.shutdown
    if shutdown == "brutal_kill":
        node._kill(p, "killed")
        await asyncio.wait([p.task])
        return
    node._signal(p, me.pid if me else pid, "shutdown", from_link=False)
    timeout = None if shutdown is None else float(shutdown)
    done, _ = await asyncio.wait([p.task], timeout=timeout)
    if not done:
        node._kill(p, "killed")
        await asyncio.wait([p.task])


class _Callbacks:
    """The supervisor's own gen_server callbacks (not a managed module: not hot-swapped)."""

    @staticmethod
    async def init(args: tuple[str, Any]) -> Any:
        module, init_args = args
        trap_exit(True)
        state = _State(module, init_args)
        result = _module(module).init(init_args)
        if isinstance(result, types.CoroutineType):
            result = await result
        if result == "ignore":
            return "ignore"
        specs = _apply_init(state, result)
        if state.strategy == "simple_one_for_one":
            state.children = [_Child(specs[0])]
            return ("ok", state)
        for spec in specs:
            child = _Child(spec)
            try:
                child.pid = await _start_spec(spec)
            except Exception as e:
                for c in reversed(state.children):
                    await _terminate(c)
                # the exception itself, as OTP keeps the term: the start that waits on this
                # supervisor reports it as its error's cause (gen_server._init_stopped)
                return ("stop", ("shutdown", ("failed_to_start_child", spec.id, e)))
            state.children.append(child)
        return ("ok", state)

    @staticmethod
    async def handle_call(req: Any, from_: Any, state: _State) -> Any:
        op = req[0]
        if op == "which_children":
            return ("reply", _which(state), state)
        if op == "count_children":
            kids = _which(state)
            return (
                "reply",
                {
                    "specs": len(state.children) if state.strategy != "simple_one_for_one" else 1,
                    "active": sum(1 for c in kids if c.pid is not None),
                    "supervisors": sum(1 for c in kids if c.type == "supervisor"),
                    "workers": sum(1 for c in kids if c.type == "worker"),
                },
                state,
            )
        if op == "get_callback_module":
            return ("reply", state.module, state)
        if op == "start_child":
            return await _call_start_child(state, req[1])
        if op == "terminate_child":
            return await _call_terminate_child(state, req[1])
        if op == "restart_child":
            return await _call_restart_child(state, req[1])
        if op == "delete_child":
            for i, c in enumerate(state.children):
                if c.spec.id == req[1]:
                    if c.pid is not None:
                        return ("reply", ("error", "running"), state)
                    del state.children[i]
                    return ("reply", "ok", state)
            return ("reply", ("error", "not_found"), state)
        return ("reply", ("error", ("unknown_call", req)), state)

    @staticmethod
    async def handle_cast(msg: Any, state: _State) -> Any:
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "$try_again_restart":
            return await _try_again(state, msg[1])
        return ("noreply", state)

    @staticmethod
    async def handle_info(msg: Any, state: _State) -> Any:
        if isinstance(msg, tuple) and len(msg) == 3 and msg[0] == "EXIT":
            return await _child_exited(state, msg[1], msg[2])
        return ("noreply", state)

    @staticmethod
    async def terminate(reason: Any, state: _State) -> None:
        if state.strategy == "simple_one_for_one":
            await _terminate_dynamic(state)
            return
        for c in reversed(state.children):
            await _terminate(c)

    @staticmethod
    def code_change(old_vsn: Any, state: _State, extra: Any) -> Any:
        # OTP: re-run init with the original args (see changed_state)
        return changed_state(state, _module(state.module))

    @staticmethod
    def code_change_with(cb: Any, module: str, old_vsn: Any, state: Any, extra: Any) -> Any:
        # the preflight's form: ``cb`` is the callback module's code to run init from
        r = changed_state(state, cb if cb is not None else _module(state.module))
        if isinstance(r, types.CoroutineType):
            return _second(r)
        return r[1]

    @staticmethod
    def get_modules(state: _State) -> list[str]:
        return [state.module]


def peek_children(pid: Pid) -> list[Child]:
    """A supervisor's children read directly from its state, with no message round trip.

    Safe on the node's loop even while the supervisor is suspended or busy: the release
    handler uses it to find the processes an upgrade affects (OTP asks ``which_children``).
    """
    p = current_node().processes.get(pid)
    if p is None or p.behaviour != "supervisor" or p.sys is None:
        return []
    state = p.sys.state
    return _which(state) if isinstance(state, _State) else []


def peek_groups(pid: Pid) -> list[tuple[Any, str, tuple[str, ...] | str, list[Pid]]]:
    """Like ``peek_children``, grouped by child spec: ``(id, type, modules, running pids)``.

    A ``simple_one_for_one`` supervisor's children all share one spec (id ``undefined``), so
    its 100,000 children are one group: the release handler's process lookup reads the spec
    once instead of building a row per child.
    """
    p = current_node().processes.get(pid)
    if p is None or p.behaviour != "supervisor" or p.sys is None:
        return []
    state = p.sys.state
    if not isinstance(state, _State):
        return []
    if state.strategy == "simple_one_for_one":
        spec = state.children[0].spec
        pids = [c.pid for c in state.children[1:] if c.pid]
        return [("undefined", spec.type, spec.modules, pids)]
    return [(c.spec.id, c.spec.type, c.spec.modules, [c.pid]) for c in state.children if c.pid]


async def restore(pid: Pid, snap: Any) -> None:
    """Put a supervisor back as :func:`snapshot` recorded it (the release handler's rollback):
    its flags and specs by value; children the script started (ids not in the snapshot)
    terminated; children that ran then and are stopped now started again from their spec.
    A child running now under an id of the snapshot keeps running (it may have been
    restarted, with a new pid, meanwhile). ``simple_one_for_one``: the spec and flags are
    put back, the running children are kept. Children are started and terminated in the
    supervisor's own context, so links are as if the supervisor had done it."""
    node = current_node()
    p = node.processes.get(pid)
    sv = p.sys if p is not None else None
    if sv is None or not isinstance(sv.state, _State) or not isinstance(snap, _State):
        return
    cur: _State = sv.state
    ctx = p.ctx if p is not None else None

    async def in_sup(coro: Any) -> Any:
        if ctx is None:
            return await coro
        return await node.loop.create_task(coro, context=ctx)

    new = _State(snap.module, snap.init_args, snap.strategy, snap.intensity, snap.period)
    new.restarts = deque(cur.restarts)
    if snap.strategy == "simple_one_for_one":
        tmpl = snap.children[0].spec
        new.children = [_Child(tmpl)]
        if cur.strategy == "simple_one_for_one":
            new.children.extend(_Child(tmpl, c.pid, c.args) for c in cur.children[1:])
        sv.state = new
        return
    now = {repr(c.spec.id): c for c in cur.children}
    was = {repr(c.spec.id) for c in snap.children}
    for c in reversed(cur.children):
        if repr(c.spec.id) not in was and c.pid is not None:
            await in_sup(_terminate(c))
    for sc in snap.children:
        running = now.get(repr(sc.spec.id))
        new.children.append(_Child(sc.spec, running.pid if running else None, sc.args))
    sv.state = new
    for c, sc in zip(new.children, snap.children, strict=True):
        if c.pid is None and sc.pid is not None:
            try:
                c.pid = await in_sup(_start_spec(c.spec))
            except Exception:
                log.exception("rollback: restarting child %r of %s failed", c.spec.id, pid)


def _which(state: _State) -> list[Child]:
    if state.strategy == "simple_one_for_one":
        return [
            Child("undefined", c.pid, c.spec.type, c.spec.modules)
            for c in state.children[1:]
            if c.pid is not None
        ]
    return [Child(c.spec.id, c.pid, c.spec.type, c.spec.modules) for c in state.children]


async def _call_start_child(state: _State, arg: Any) -> Any:
    if state.strategy == "simple_one_for_one":
        tmpl = state.children[0].spec
        extra = list(arg) if isinstance(arg, list | tuple) else [arg]
        try:
            pid = await _start_spec(tmpl, extra)
        except Exception as e:
            return ("reply", ("error", repr(e)), state)
        if pid is not None:
            state.children.append(_Child(tmpl, pid, extra))
        return ("reply", ("ok", pid), state)
    try:
        spec = _check_spec(arg)
    except ProcessError as e:
        return ("reply", ("error", e.code), state)
    if any(repr(c.spec.id) == repr(spec.id) for c in state.children):
        return ("reply", ("error", "already_present"), state)
    try:
        pid = await _start_spec(spec)
    except Exception as e:
        return ("reply", ("error", repr(e)), state)
    state.children.append(_Child(spec, pid))
    return ("reply", ("ok", pid), state)


async def _call_terminate_child(state: _State, ident: Any) -> Any:
    if state.strategy == "simple_one_for_one":
        for i, c in enumerate(state.children[1:], 1):
            if c.pid == ident:
                await _terminate(c)
                del state.children[i]
                return ("reply", "ok", state)
        return ("reply", ("error", "not_found"), state)
    for c in state.children:
        if c.spec.id == ident:
            c.restarting = False
            await _terminate(c)
            return ("reply", "ok", state)
    return ("reply", ("error", "not_found"), state)


async def _call_restart_child(state: _State, ident: Any) -> Any:
    for c in state.children:
        if c.spec.id == ident:
            if c.pid is not None:
                return ("reply", ("error", "running"), state)
            try:
                c.pid = await _start_spec(c.spec)
            except Exception as e:
                return ("reply", ("error", repr(e)), state)
            return ("reply", ("ok", c.pid), state)
    return ("reply", ("error", "not_found"), state)


def _should_restart(restart: str, reason: Any) -> bool:
    if restart == "permanent":
        return True
    if restart == "temporary":
        return False
    normal = reason in ("normal", "shutdown") or (
        isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"
    )
    return not normal


def _find(state: _State, pid: Pid) -> int | None:
    kids = state.children
    for i in range(len(kids) - 1, -1, -1):  # recent children first (simple_one_for_one)
        if kids[i].pid == pid:
            return i
    return None


async def _child_exited(state: _State, pid: Pid, reason: Any) -> Any:
    idx = _find(state, pid)
    if idx is None:
        # OTP: an EXIT from a pid that is not a child (one already replaced or terminated by
        # a restart in the same turn, say) is ignored; the parent's EXIT never gets here, the
        # generic loop ends the supervisor on it
        return ("noreply", state)
    child = state.children[idx]
    child.pid = None
    if not _should_restart(child.spec.restart, reason):
        if state.strategy == "simple_one_for_one" or child.spec.restart == "temporary":
            del state.children[idx]
        return ("noreply", state)
    return await _restart_counted(state, child)


def _add_restart(state: _State) -> bool:
    """Count a restart; False when it exceeds the intensity within the period."""
    now = time.monotonic()
    state.restarts.append(now)
    while state.restarts and now - state.restarts[0] > state.period:
        state.restarts.popleft()
    return len(state.restarts) <= state.intensity


async def _restart_counted(state: _State, child: _Child) -> Any:
    if not _add_restart(state):
        log.error("supervisor %s: reached max restart intensity; shutting down", state.module)
        child.restarting = False
        return ("stop", "shutdown", state)
    child.restarting = False
    try:
        await _restart(state, child)
    except Exception as e:
        # OTP's try_again_restart: mark the child restarting and retry from the mailbox,
        # so other requests (a shutdown, say) are served in between; every retry counts
        # against the intensity, which ends the loop if the child never starts
        log.error("supervisor %s: restart of %r failed: %r", state.module, child.spec.id, e)
        failed = getattr(e, "failed_child", child)
        failed.restarting = True
        key = failed if state.strategy == "simple_one_for_one" else ("id", repr(failed.spec.id))
        me = current_process()
        if me is not None:
            me.deliver(("$gen_cast", ("$try_again_restart", key)))
    return ("noreply", state)


class _StartFailed(ProcessError):
    def __init__(self, child: _Child, cause: BaseException) -> None:
        super().__init__(f"child {child.spec.id!r} failed to start: {cause!r}", code="start_failed")
        self.failed_child = child


async def _start_child_of(child: _Child, extra: Sequence[Any] = ()) -> Pid | None:
    try:
        return await _start_spec(child.spec, extra)
    except Exception as e:
        raise _StartFailed(child, e) from e


async def _restart(state: _State, child: _Child) -> None:
    if state.strategy == "simple_one_for_one":
        child.pid = await _start_child_of(child, child.args or [])
        if child.pid is None:
            state.children.remove(child)
        return
    if state.strategy == "one_for_one":
        child.pid = await _start_child_of(child)
        return
    idx = state.children.index(child)
    affected = state.children if state.strategy == "one_for_all" else state.children[idx:]
    for c in reversed(affected):
        if c is not child:
            await _terminate(c)
    for c in affected:
        c.restarting = False
    for c in affected:
        c.pid = await _start_child_of(c)


async def _try_again(state: _State, key: Any) -> Any:
    if isinstance(key, _Child):
        child = key if key.restarting and any(c is key for c in state.children) else None
    else:
        child = next(
            (c for c in state.children if c.restarting and ("id", repr(c.spec.id)) == key), None
        )
    if child is None:
        return ("noreply", state)  # terminated or restarted meanwhile
    return await _restart_counted(state, child)


async def _terminate_dynamic(state: _State) -> None:
    """OTP's terminate_dynamic_children: every child gets the shutdown signal at once, then
    all are waited for up to the spec's shutdown, and those still alive are killed."""
    node = current_node()
    me = current_process()
    spec = state.children[0].spec
    procs = []
    for c in state.children[1:]:
        p = node.processes.get(c.pid) if c.pid is not None else None
        c.pid = None
        if p is None or p.task is None:
            continue
        if me is not None:
            me.links.discard(p.pid)
            p.links.discard(me.pid)
        if spec.shutdown == "brutal_kill":
            node._kill(p, "killed")
        else:
            node._signal(p, me.pid if me else p.pid, "shutdown", from_link=False)
        procs.append(p)
    del state.children[1:]
    tasks = [p.task for p in procs if p.task is not None and not p.task.done()]
    if not tasks:
        return
    timeout = None if spec.shutdown in (None, "brutal_kill") else float(spec.shutdown)
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    if pending:
        for p in procs:
            if p.alive:
                node._kill(p, "killed")
        await asyncio.wait(pending)


# -- client API ----------------------------------------------------------------------


async def start_link(
    module: str | types.ModuleType, args: Any = None, *, name: str | None = None
) -> Pid:
    """Start a supervisor linked to the caller; returns once every child has started."""
    mod = module if isinstance(module, str) else module.__name__
    pid = await gen_server._start(
        mod, (mod, args), name=name, link=True, timeout=None, callbacks=_Callbacks
    )
    p = current_node().processes.get(pid) if pid is not None else None
    if p is not None:
        p.behaviour = "supervisor"
    return pid


async def start(
    module: str | types.ModuleType, args: Any = None, *, name: str | None = None
) -> Pid:
    """Start a supervisor without a link (tests, tools)."""
    mod = module if isinstance(module, str) else module.__name__
    pid = await gen_server._start(
        mod, (mod, args), name=name, link=False, timeout=None, callbacks=_Callbacks
    )
    p = current_node().processes.get(pid) if pid is not None else None
    if p is not None:
        p.behaviour = "supervisor"
    return pid


async def start_child(sup: Pid | str, spec_or_args: Any) -> Any:
    """Add and start a child (a spec; for simple_one_for_one, the extra args).
    Returns ``("ok", pid)`` or ``("error", reason)``."""
    return await gen_server.call(sup, ("start_child", spec_or_args), timeout=None)


async def terminate_child(sup: Pid | str, ident: Any) -> Any:
    """Stop a child by id (by pid for simple_one_for_one); its spec is kept."""
    return await gen_server.call(sup, ("terminate_child", ident), timeout=None)


async def restart_child(sup: Pid | str, ident: Any) -> Any:
    """Start a terminated child again from its spec."""
    return await gen_server.call(sup, ("restart_child", ident), timeout=None)


async def delete_child(sup: Pid | str, ident: Any) -> Any:
    """Forget a terminated child's spec."""
    return await gen_server.call(sup, ("delete_child", ident), timeout=None)


async def which_children(sup: Pid | str) -> list[Child]:
    """The children in start order: id, pid (None when not running), type, modules."""
    r: list[Child] = await gen_server.call(sup, ("which_children",), timeout=None)
    return r


async def count_children(sup: Pid | str) -> dict[str, int]:
    r: dict[str, int] = await gen_server.call(sup, ("count_children",), timeout=None)
    return r


async def get_callback_module(sup: Pid | str) -> str:
    r: str = await gen_server.call(sup, ("get_callback_module",), timeout=None)
    return r
