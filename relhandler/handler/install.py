"""The evaluator of low-level relup instructions (OTP's ``release_handler_1``), with an undo
log: a failure after the point of no return is rolled back in place.

Before the point of no return everything is read and checked: ``load_object_code`` compiles
the new code (a syntax error fails here), the old-process check runs, and the *preflight*
runs every ``code_change`` of the plan on a plain-data copy (``runtime.statecopy``) of each
affected process's state, in a worker thread and under the code_change timeout, so a
callback that hangs is reported and abandoned while the node keeps serving. After it, each
step records what it changes; on any error (any ``BaseException``, a cancellation included)
the module table, the process states, the code path and the application specs are put back,
every suspended process is resumed, and the error names the instruction and the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import inspect
import logging
import math
import os
import queue
import signal
import threading
import time
import types
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relhandler.errors import InstallError, ReleaseInputError, RelhandlerError
from relhandler.release._systools_rc import RcError, check_op
from relhandler.release.relup import describe_reason
from relhandler.runtime import Node, Pid
from relhandler.runtime import supervisor as rsup
from relhandler.runtime import sys as rsys
from relhandler.runtime.application import AppController
from relhandler.runtime.code import Prepared, Snapshot, decorate
from relhandler.runtime.statecopy import copy_state
from relhandler.runtime.statetype import Mismatch, declared_state_type, state_mismatch
from relhandler.runtime.supervisor import peek_groups
from relhandler.terms import from_term, to_term

__all__ = [
    "AFTER_PNR",
    "DEFAULT_CODE_CHANGE",
    "InstallOptions",
    "InstallResult",
    "Installer",
    "behaviour_index",
    "find_processes",
    "trial_copy",
]

log = logging.getLogger("relhandler.install")

AFTER_PNR = {
    "load",
    "remove",
    "purge",
    "suspend",
    "resume",
    "code_change",
    "stop",
    "start",
    "sync_nodes",
    "apply",
    "restart_emulator",
    "point_of_no_return",
}
DEFAULT_SUSPEND = 5.0
DEFAULT_CODE_CHANGE = 5.0
"""Seconds a ``code_change`` (trial or real) may take unless told otherwise (OTP's sys default)."""
YIELD_EVERY = 0.002  # s of preflight copying on the loop before the batch goes to the thread
# s the loop waits, blocked, for new module code the preflight executes in its thread: a
# normal top level is done by then, and no process ran meanwhile (the real load runs it
# on the loop too); a slower one is then awaited without blocking, as a runaway is
SCRATCH_HOLD = 1.0

Progress = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class InstallOptions:
    """``install_release`` options; timeouts in seconds, ``None`` = not given (the relup's
    timeout for the module, else the default), ``math.inf`` = infinity."""

    suspend_timeout: float | None = None
    code_change_timeout: float | None = None
    dry_run: bool = False


@dataclass(slots=True)
class InstallResult:
    steps: list[dict[str, Any]] = field(default_factory=list)
    unpurged: dict[str, str] = field(default_factory=dict)
    restart: bool = False
    touched: dict[str, int] = field(default_factory=dict)  # module → processes suspended


def _tag(i: Any) -> str:
    return i if isinstance(i, str) else str(i[0])


def _text(i: Any) -> str:
    return " ".join(map(str, from_term(i)))


def _seconds(t: float | None) -> float | None:
    """An option's seconds for asyncio: ``math.inf`` (infinity) becomes None."""
    return None if t is None or math.isinf(t) else t


# -- the cyclic collector ---------------------------------------------------------------
# A full GC pass over a big node costs tens of ms: the collector is off while the script
# does its own work (the pause window), and back on around every wait whose length the
# install does not control (busy processes, async callbacks, applications starting or
# stopping), so a long wait never runs the whole node without it.
_collector_paused = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Keep the cyclic collector off for the block (if it was on)."""
    global _collector_paused
    if _collector_paused or not gc.isenabled():
        yield
        return
    gc.disable()
    _collector_paused = True
    try:
        yield
    finally:
        _collector_paused = False
        gc.enable()


@contextlib.contextmanager
def collector_running() -> Iterator[None]:
    """Turn the collector back on for a wait inside ``collector_paused``."""
    if not _collector_paused:
        yield
        return
    gc.enable()
    try:
        yield
    finally:
        if _collector_paused:
            gc.disable()


# -- the preflight's worker thread ------------------------------------------------------
class _Runaway(Exception):
    """A trial callback did not return within its timeout (its thread is abandoned)."""

    def __init__(self, index: int, elapsed: float) -> None:
        super().__init__(index, elapsed)
        self.index = index
        self.elapsed = elapsed


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


class _TrialThread:
    """Runs the preflight's callbacks (new module code, trial ``code_change``) off the loop.

    One daemon thread per preflight: the loop keeps serving while user code runs, and a
    callback that overruns its timeout is abandoned (a thread cannot be stopped; it runs on
    until the callback returns, and then exits). Not the loop's executor: its threads are
    joined at exit, so one runaway would keep the node from ever stopping.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._jobs: queue.SimpleQueue[
            tuple[list[Callable[[], Any]], asyncio.Future[Any], threading.Event] | None
        ] = queue.SimpleQueue()
        self._ctx = contextvars.copy_context()  # current_node() works in the callbacks
        self.started = 0.0  # perf_counter when the running callback began; 0 when idle
        self.index = 0
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._main, name="relhandler-preflight")
        self._thread.daemon = True
        self._thread.start()

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._abandoned.is_set():
                return
            calls, fut, finished = job
            out: list[tuple[bool, Any]] = []
            for i, call in enumerate(calls):
                if self._abandoned.is_set():
                    return
                self.index = i
                self.started = time.perf_counter()
                try:
                    out.append((True, self._ctx.run(call)))
                except BaseException as e:  # SystemExit too: new code must not end the node
                    out.append((False, e))
            self.started = 0.0
            finished.set()
            if self._abandoned.is_set():
                return
            try:
                self._loop.call_soon_threadsafe(_settle, fut, out)
            except RuntimeError:  # the loop is closed: the node is gone
                return

    async def run(
        self, calls: list[Callable[[], Any]], timeout: float | None, *, hold: float = 0.0
    ) -> list[tuple[bool, Any]]:
        """``[(True, value) | (False, exception)]`` per call; ``_Runaway`` on a timeout.

        ``hold``: block the loop for up to that many seconds while the calls run, so that
        no process runs meanwhile (then wait without blocking, as usual)."""
        fut: asyncio.Future[list[tuple[bool, Any]]] = self._loop.create_future()
        finished = threading.Event()
        self._jobs.put((calls, fut, finished))
        if hold > 0:
            finished.wait(hold if timeout is None else min(hold, timeout))
        try:
            while True:
                started, index = self.started, self.index
                if timeout is None:
                    left = None
                elif started:
                    left = started + timeout - time.perf_counter()
                    if left <= 0 and self.started == started:
                        self._abandoned.set()
                        raise _Runaway(index, time.perf_counter() - started)
                else:
                    left = timeout  # not started yet
                await asyncio.wait([fut], timeout=None if left is None else max(left, 0.001))
                if fut.done():
                    return fut.result()
        except BaseException:
            if not fut.done():
                self._abandoned.set()  # cancelled: the thread stops after its current call
            raise

    def close(self) -> None:
        """Let the thread end (at once if idle, else when its callback returns)."""
        self._jobs.put(None)


class _ShapeError(Exception):
    """A trial ``code_change`` returned a state that does not match the declared type."""

    def __init__(self, mismatch: Mismatch) -> None:
        super().__init__(str(mismatch))
        self.mismatch = mismatch


class _Async:
    """An async trial ``code_change``: its coroutine, awaited on the loop by the preflight."""

    __slots__ = ("coro",)

    def __init__(self, coro: types.CoroutineType[Any, Any, Any]) -> None:
        self.coro = coro


def _check_shape(state: Any, declared: Any | None) -> None:
    if declared is not None:
        m = state_mismatch(state, declared)
        if m is not None:
            raise _ShapeError(m)


def _trial_code_change(
    f: Callable[..., Any],
    ctx: contextvars.Context | None,
    args: tuple[Any, ...],
    declared: Any | None = None,
) -> _Async | None:
    """One trial ``code_change`` (in the worker thread), by the behaviour's own contract
    (``SysState.code_change_with``), in the process's context; raises what the real one
    would, or ``_ShapeError`` when the new state does not match ``declared``. An async
    one is returned unrun, for the loop to await."""
    r = f(*args) if ctx is None else ctx.run(f, *args)
    if isinstance(r, types.CoroutineType):
        return _Async(r)
    _check_shape(r, declared)
    return None


def _being_cancelled() -> bool:
    """True if the running task has a cancellation under way (not user code raising one)."""
    t = asyncio.current_task()
    return t is not None and t.cancelling() > 0


def _failure_row(k: int, mod: str, pid: str, err: BaseException) -> dict[str, Any]:
    """A preflight row for a trial ``code_change`` that raised or returned the wrong shape."""
    row: dict[str, Any] = {"instruction": k, "module": mod, "pid": pid, "function": "code_change"}
    if isinstance(err, _ShapeError):
        m = err.mismatch
        row["error"] = f"returned a state that does not match {m.type_name}: {m.detail}"
        row["field"] = m.field
        row["state_type"] = m.type_name
    else:
        row["error"] = f"{type(err).__name__}: {err}"
    return row


def _spec_groups(node: Node) -> Iterator[tuple[Pid | None, Any, list[Pid], Any]]:
    """``(supervisor, child id, pids, modules)`` for every child spec in the running apps'
    supervision trees, top supervisors first with supervisor None (otp/semantics.md §7),
    read directly on the loop. ``modules`` may be ``"dynamic"`` (see ``_modules``); a pid
    may have just exited (its EXIT not yet handled by its supervisor)."""
    apps = node.apps
    if not isinstance(apps, AppController):
        return

    def walk(sup: Pid) -> Iterator[tuple[Pid | None, Any, list[Pid], Any]]:
        for cid, typ, mods, pids in peek_groups(sup):
            yield sup, cid, pids, mods
            if typ == "supervisor":
                for pid in pids:
                    yield from walk(pid)

    for name in list(apps.order):
        top = apps.top_supervisor(name)
        if top is None or top not in node.processes:
            continue
        s = node.processes[top].sys
        yield None, None, [top], [s.module] if isinstance(s, rsys.SysState) else []
        yield from walk(top)


def _modules(node: Node, pid: Pid, mods: Any) -> list[str]:
    """A child's modules: its spec's list, or for ``dynamic`` what ``get_modules`` says."""
    if mods != "dynamic":
        return list(mods)
    p = node.processes.get(pid)
    s = p.sys if p is not None else None
    return list(s.modules()) if isinstance(s, rsys.SysState) else []


def find_processes(node: Node) -> list[tuple[Pid | None, Any, Pid, list[str]]]:
    """``(supervisor, child id, pid, modules)`` for every live process in the running apps'
    supervision trees."""
    return [
        (sup, cid, pid, _modules(node, pid, mods))
        for sup, cid, pids, mods in _spec_groups(node)
        for pid in pids
        if pid in node.processes
    ]


def _process_index(node: Node) -> dict[str, list[Pid]]:
    """module → the processes whose child spec names it (``dynamic``: whose ``get_modules``
    does), from one walk of the supervision trees. Done once per suspend instruction, as
    OTP's release_handler_1 does; a ``simple_one_for_one`` supervisor's children are one
    group, so a pid costs one dict insert. A pid that has just exited may be listed:
    suspend_many reports it as noproc."""
    index: dict[str, dict[Pid, None]] = {}
    for _sup, _cid, pids, mods in _spec_groups(node):
        if mods == "dynamic":
            for pid in pids:
                for m in _modules(node, pid, mods):
                    index.setdefault(m, {})[pid] = None
        else:
            for m in mods:
                index.setdefault(m, {}).update(dict.fromkeys(pids))
    return {m: list(pids) for m, pids in index.items()}


def behaviour_index(node: Node) -> dict[str, list[Pid]]:
    """``_process_index`` plus every live behaviour process outside the supervision trees,
    by the modules its sys hooks name (a reload on a dev node: a GenServer started from the
    console is migrated too, where an install finds only what the trees' child specs name)."""
    index = {m: dict.fromkeys(pids) for m, pids in _process_index(node).items()}
    for p in list(node.processes.values()):
        s = p.sys
        if p.alive and isinstance(s, rsys.SysState):
            for m in s.modules():
                index.setdefault(m, {})[p.pid] = None
    return {m: list(pids) for m, pids in index.items()}


@dataclass(slots=True)
class _Undo:
    snapshot: Snapshot | None = None
    path: list[Path] = field(default_factory=list)
    specs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, dict[str, Any]] = field(default_factory=dict)
    states: dict[Pid, Any] = field(default_factory=dict)  # by value, before code_change
    sups: dict[Pid, Any] | None = None  # supervisor snapshots, taken before the first step
    touched_sups: set[Pid] = field(default_factory=set)  # the script's apply/stop targets
    suspended: dict[Pid, None] = field(default_factory=dict)  # an ordered set
    started_apps: list[str] = field(default_factory=list)
    stopped_apps: list[tuple[str, str]] = field(default_factory=list)


class Installer:
    """Evaluates one relup script on a node.

    ``lib_dir(app, vsn)`` gives the directory of an application version (the target
    release's); ``new_specs`` / ``new_env`` are the target release's app specs and env,
    installed at the point of no return. ``index(node)`` maps a module to the processes a
    ``suspend`` or ``code_change`` of it touches (default: the supervision trees' specs).
    """

    def __init__(
        self,
        node: Node,
        script: Sequence[Any],
        *,
        mode: str,
        lib_dir: Callable[[str, str], Path],
        new_path: list[Path],
        new_specs: Sequence[Any],
        new_env: dict[str, dict[str, Any]],
        options: InstallOptions,
        progress: Progress | None = None,
        index: Callable[[Node], dict[str, list[Pid]]] | None = None,
    ) -> None:
        self.node = node
        self._index = index if index is not None else _process_index
        self.terms = [to_term(i, f"relup instruction {k}") for k, i in enumerate(script)]
        self.mode = mode
        self.lib_dir = lib_dir
        self.new_path = new_path
        self.new_specs = new_specs
        self.new_env = new_env
        self.opts = options
        self.progress = progress
        self.prepared: dict[str, Prepared] = {}
        self.old_vsn: dict[str, Any] = {}
        self.suspended: dict[str, list[Pid]] = {}
        self.stopped: dict[str, list[tuple[Pid, Any]]] = {}
        self.undo = _Undo()
        self.result = InstallResult()
        # a module's timeout in the relup (its `update`'s `timeout`, carried by the suspend
        # entry), used for its code_change too: OTP's relup has no code_change timeout
        self._instr_timeout: dict[str, Any] = {}
        for i in self.terms:
            if _tag(i) == "suspend":
                for e in i[1]:
                    if isinstance(e, tuple):
                        self._instr_timeout[e[0]] = e[1]

    def code_change_timeout(self, mod: str) -> float | None:
        """Seconds ``mod``'s code_change may take (None = infinity): ``--code-change-timeout``,
        else the relup instruction's timeout for ``mod``, else ``DEFAULT_CODE_CHANGE``."""
        if self.opts.code_change_timeout is not None:
            return _seconds(self.opts.code_change_timeout)
        t = self._instr_timeout.get(mod, "default")
        if t == "default":
            return DEFAULT_CODE_CHANGE
        if t == "infinity":
            return None
        return float(t) / 1000.0

    # -- checks before the point of no return ------------------------------------------
    def _split(self) -> tuple[list[Any], list[Any]]:
        if "point_of_no_return" in self.terms:
            k = self.terms.index("point_of_no_return")
            return self.terms[:k], self.terms[k:]
        return [], self.terms

    def check(self) -> None:
        """Syntax, old processes, object code, applies before the pnr: nothing changes."""
        for k, i in enumerate(self.terms):
            try:
                check_op(i)
            except RcError as e:
                raise InstallError(
                    f"relup instruction {k} {_text(i)}: {describe_reason(e.reason)}"
                ) from None
        before, after = self._split()
        for i in after:
            if _tag(i) not in AFTER_PNR:
                raise ReleaseInputError(
                    f"illegal instruction after point_of_no_return: {_text(i)}",
                    code="illegal_instruction_after_point_of_no_return",
                )
        code = self.node.code
        for i in self.terms:
            if _tag(i) in ("load", "remove") and i[1][1] == "soft_purge":
                m = i[1][0]
                if code.has_old(m) and code.old_code_users(m):
                    users = ", ".join(map(str, code.old_code_users(m)))
                    raise InstallError(
                        f"module {m!r} still has processes in its old code ({users}) and its "
                        f"pre-purge is soft_purge; wait for them or `relhandler purge {m}`",
                        code="old_processes",
                    )
        for i in before:
            if _tag(i) == "load_object_code":
                app, vsn, mods = i[1]
                base = self.lib_dir(app, vsn)
                for m in mods:
                    path = _module_file(base, m)
                    if path is None:
                        raise ReleaseInputError(
                            f"no such file for module {m!r} of {app} {vsn} in {base}",
                            code="no_such_file",
                        )
                    self.prepared[m] = code.prepare(m, path)

    async def run_before_pnr(self) -> None:
        before, _ = self._split()
        for i in before:
            if _tag(i) == "apply":
                try:
                    await self._apply(i)
                except RelhandlerError:
                    raise
                except BaseException as e:
                    if isinstance(e, asyncio.CancelledError) and _being_cancelled():
                        raise
                    raise InstallError(
                        f"apply {_text(i)} before point_of_no_return raised "
                        f"{type(e).__name__}: {e}",
                        code="apply_failed",
                    ) from e

    async def preflight(self) -> list[dict[str, Any]]:
        """Run each planned code_change on a deep copy of each affected process's state.

        New module code and every sync ``code_change`` run in a worker thread, each under its
        module's code_change timeout: a failure or a ``BaseException`` (``SystemExit`` too) is
        a row of the result, and a callback that overruns is a row too and ends the preflight
        (abandoned in its thread), while the node keeps serving."""
        import sys as _sys

        worker = _TrialThread()
        # modules the relup adds are not importable yet: give the scratch copies of the new
        # code a scratch copy of them to import, removed again below
        added: list[str] = []
        try:
            for name in self.prepared:
                if name in _sys.modules:
                    continue
                try:
                    m = await self._scratch(worker, name)
                except _Runaway as r:
                    return [self._runaway_row(-1, name, "-", "new code of", r)]
                except Exception as e:
                    log.warning("preflight: cannot execute new module %s: %r", name, e)
                    continue
                except BaseException as e:
                    if isinstance(e, asyncio.CancelledError) and _being_cancelled():
                        raise
                    log.warning("preflight: new module %s raised %r", name, e)
                    continue
                _sys.modules[name] = m
                added.append(name)
            return await self._preflight(worker)
        finally:
            worker.close()
            for name in added:
                _sys.modules.pop(name, None)

    def _runaway_row(self, k: int, mod: str, pid: str, what: str, r: _Runaway) -> dict[str, Any]:
        """A row for a callback that overran its timeout (``what``: which one)."""
        t = self.code_change_timeout(mod)
        log.error(
            "preflight: %s %s (process %s) did not return within %ss; abandoned in its thread",
            what,
            mod,
            pid,
            t,
        )
        return {
            "instruction": k,
            "module": mod,
            "pid": pid,
            "error": f"{what} {mod} did not return within {t}s "
            f"({'cancelled' if what.startswith('async') else 'a runaway, abandoned'}; if it "
            f"is only slow, raise --code-change-timeout)",
            "timeout": True,
        }

    async def _preflight(self, worker: _TrialThread) -> list[dict[str, Any]]:
        failures: list[dict[str, Any]] = []
        code = self.node.code
        scratch: dict[str, types.ModuleType] = {}
        loaded_before: set[str] = set()
        index = self._index(self.node)

        async def code_of(m: str) -> Any:
            """The code of ``m`` a code_change at this point of the script runs: the new
            (prepared, scratch) code once the script has loaded it, else the current.
            Raises what the new code's top level raised; ``_Runaway`` if it hangs."""
            if m in loaded_before and m in self.prepared:
                sm = scratch.get(m)
                if sm is None:
                    sm = scratch[m] = await self._scratch(worker, m)
                return sm
            return code.current(m) if code.is_loaded(m) else None

        async def declared_of(m: str) -> Any | None:
            """The state type the version being installed declares for ``m`` (its new
            code, up or down); None if none, or if that code cannot be executed here (the
            load reports it)."""
            if m not in self.prepared:
                return declared_state_type(code.current(m)) if code.is_loaded(m) else None
            sm = scratch.get(m)
            if sm is None:
                sm = scratch[m] = await self._scratch(worker, m)
            return declared_state_type(sm)

        for k, i in enumerate(self.terms):
            tag = _tag(i)
            if tag == "load":
                loaded_before.add(i[1][0])
            if tag != "code_change":
                continue
            mode = i[1] if len(i) == 3 else "up"
            for mod, extra in i[-1]:
                pids = index.get(mod, [])
                timeout = self.code_change_timeout(mod)
                try:
                    fn_mod = await code_of(mod)
                except _Runaway as r:
                    failures.append(self._runaway_row(k, mod, "-", "new code of", r))
                    return failures
                except BaseException as e:
                    if isinstance(e, asyncio.CancelledError) and _being_cancelled():
                        raise
                    failures.append(
                        {
                            "instruction": k,
                            "module": mod,
                            "pid": "-",
                            "error": f"new code of {mod} raised while "
                            f"loading: {type(e).__name__}: {e}",
                        }
                    )
                    continue
                if fn_mod is None:
                    continue
                try:
                    declared = await declared_of(mod)
                except _Runaway as r:
                    failures.append(self._runaway_row(k, mod, "-", "new code of", r))
                    return failures
                except BaseException as e:
                    if isinstance(e, asyncio.CancelledError) and _being_cancelled():
                        raise
                    declared = None
                vsn = self._code_change_vsn(mode, mod, before_load=mod not in loaded_before)
                todo = [
                    p
                    for p in map(self.node.processes.get, pids)
                    if p is not None and isinstance(p.sys, rsys.SysState)
                ]
                # OTP: a supervisor's own code_change re-runs *its callback module's* init
                # (the one loaded by then: the new code up, the old code down)
                sup_code: dict[str, Any] = {}
                for p in todo:
                    cm = p.sys.module if isinstance(p.sys, rsys.SysState) else mod
                    if p.behaviour == "supervisor" and cm != mod and cm not in sup_code:
                        try:
                            sup_code[cm] = await code_of(cm)
                        except _Runaway as r:
                            failures.append(self._runaway_row(k, cm, str(p.pid), "new code of", r))
                            return failures
                        except BaseException as e:
                            if isinstance(e, asyncio.CancelledError) and _being_cancelled():
                                raise
                            sup_code[cm] = e
                n = 0
                while n < len(todo):
                    # copy a chunk of live states on the loop (nothing is suspended yet, so
                    # only here do they hold still), then run its code_changes in the thread
                    batch: list[Pid] = []
                    calls: list[Callable[[], Any]] = []
                    ctxs: list[contextvars.Context | None] = []
                    shapes: list[Any | None] = []
                    t0 = time.perf_counter()
                    while n < len(todo) and (not batch or time.perf_counter() - t0 < YIELD_EVERY):
                        p = todo[n]
                        n += 1
                        if not p.alive or not isinstance(p.sys, rsys.SysState):
                            continue
                        cb = fn_mod
                        if p.behaviour == "supervisor":
                            # it never mutates the state, so no copy
                            cm = p.sys.module
                            cb = fn_mod if cm == mod else sup_code[cm]
                            if isinstance(cb, BaseException):
                                failures.append(
                                    {
                                        "instruction": k,
                                        "module": mod,
                                        "pid": str(p.pid),
                                        "error": f"new code of {cm} raised while loading: "
                                        f"{type(cb).__name__}: {cb}",
                                    }
                                )
                                continue
                            state = p.sys.state
                        else:
                            state = trial_copy(p.sys.state)
                        batch.append(p.pid)
                        ctxs.append(p.ctx)
                        # a declared state type is a GenServer's (module docs: statetype)
                        shape = declared if p.behaviour == "gen_server" else None
                        shapes.append(shape)
                        # the behaviour knows its code_change contract (gen_statem: state
                        # and data; gen_event: each handler of the module); it runs in the
                        # process's context (a copy: the thread enters it)
                        calls.append(
                            functools.partial(
                                _trial_code_change,
                                p.sys.code_change_with,
                                p.ctx.copy() if p.ctx is not None else None,
                                (cb, mod, vsn, state, extra),
                                shape,
                            )
                        )
                    try:
                        outcomes = await worker.run(calls, timeout)
                    except _Runaway as r:
                        failures.append(
                            self._runaway_row(k, mod, str(batch[r.index]), "code_change of", r)
                        )
                        return failures
                    for j, (pid, (ok, got)) in enumerate(zip(batch, outcomes, strict=True)):
                        if ok and isinstance(got, _Async):
                            ok, got = await self._trial_async(got, ctxs[j], timeout, shapes[j])
                            if not ok and isinstance(got, _Runaway):
                                for _, rest in outcomes[j + 1 :]:
                                    if isinstance(rest, _Async):
                                        rest.coro.close()
                                failures.append(
                                    self._runaway_row(k, mod, str(pid), "async code_change of", got)
                                )
                                return failures
                        if not ok:
                            failures.append(_failure_row(k, mod, str(pid), got))
        return failures

    async def _trial_async(
        self,
        job: _Async,
        ctx: contextvars.Context | None,
        timeout: float | None,
        declared: Any | None,
    ) -> tuple[bool, Any]:
        """Await an async trial ``code_change`` on the loop, in (a copy of) the process's
        context and under its timeout, as the install will: ``(True, None)`` or
        ``(False, error)`` (a ``_Runaway`` when it overran: it is cancelled)."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        ctx = ctx.copy() if ctx is not None else contextvars.copy_context()
        task = loop.create_task(rsys.contained(job.coro), context=ctx)
        try:
            new = await asyncio.wait_for(task, timeout)
            _check_shape(new, declared)
        except TimeoutError:
            return False, _Runaway(0, time.perf_counter() - t0)
        except rsys.Escaped as e:
            return False, e.error
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError) and _being_cancelled():
                raise
            return False, e
        return True, None

    async def _scratch(self, worker: _TrialThread, name: str) -> types.ModuleType:
        """Execute the new code of ``name`` in a scratch module, in the worker thread."""
        import sys as _sys

        live = _sys.modules.get(name)
        try:
            # held: while it executes, the scratch module is sys.modules[name], and live
            # code must not see it (pickle, typing and pydantic look modules up there)
            ((ok, m),) = await worker.run(
                [functools.partial(_scratch_module, self.prepared[name])],
                self.code_change_timeout(name),
                hold=SCRATCH_HOLD,
            )
        except _Runaway:
            # the scratch module sits in sys.modules while it executes: put the live one back
            if live is None:
                _sys.modules.pop(name, None)
            else:
                _sys.modules[name] = live
            raise
        if not ok:
            raise m
        return m  # type: ignore[no-any-return]

    def _code_change_vsn(self, mode: str, mod: str, *, before_load: bool) -> Any:
        if mode == "down":
            p = self.prepared.get(mod)
            return ("down", p.vsn if p is not None else None)
        return self.node.code.vsn(mod) if before_load else self.old_vsn.get(mod)

    def dry_run(self) -> list[dict[str, Any]]:
        """Every instruction with the processes its suspend/code_change would touch."""
        out = []
        index = self._index(self.node)
        for k, i in enumerate(self.terms):
            row: dict[str, Any] = {"index": k, "instruction": from_term(i)}
            if _tag(i) == "suspend":
                mods = [x[0] if isinstance(x, tuple) else x for x in i[1]]
                row["processes"] = {m: [str(p) for p in index.get(m, [])] for m in mods}
            elif _tag(i) == "code_change":
                row["processes"] = {m: [str(p) for p in index.get(m, [])] for m, _ in i[-1]}
            out.append(row)
        return out

    # -- evaluation ----------------------------------------------------------------------
    async def execute(self, crash_after: int | None = None) -> InstallResult:
        """Evaluate the script from the point of no return; roll back on failure.

        The cyclic collector is off while the script runs (``collector_paused``), and on
        during the waits it does not control."""
        with collector_paused():
            return await self._execute(crash_after)

    async def _execute(self, crash_after: int | None) -> InstallResult:
        _, after = self._split()
        offset = len(self.terms) - len(after)
        self._snap_sups()
        for n, i in enumerate(after):
            k = offset + n
            t0 = time.perf_counter()
            try:
                await self._step(i)
            except BaseException as e:
                # any BaseException: new code raising SystemExit or KeyboardInterrupt fails the
                # install like any error; a cancellation (the node stopping) rolls back too
                cancelled = isinstance(e, asyncio.CancelledError) and _being_cancelled()
                cause = e.message if isinstance(e, RelhandlerError) else f"{type(e).__name__}: {e}"
                log.error(
                    "install failed at instruction %d (%s): %s; rolling back",
                    k,
                    _text(i),
                    "cancelled" if cancelled else cause,
                )
                try:
                    await self.rollback()
                except BaseException as rb:
                    log.exception("rollback failed")
                    if cancelled:
                        raise
                    raise InstallError(
                        f"instruction {k} ({_text(i)}) failed: {cause}; the rollback failed "
                        f"too ({type(rb).__name__}: {rb}); the node restarts on the permanent "
                        f"release",
                        code="rollback_failed",
                        details={"instruction": k, "text": _text(i)},
                    ) from e
                if cancelled:
                    raise
                raise InstallError(
                    f"instruction {k} ({_text(i)}) failed: {cause}; rolled back in place, the "
                    f"node still runs the old release",
                    details={
                        "instruction": k,
                        "text": _text(i),
                        **(e.details if isinstance(e, RelhandlerError) else {}),
                    },
                ) from e
            ms = (time.perf_counter() - t0) * 1000
            step = {"index": k, "instruction": _text(i), "ms": round(ms, 3)}
            self.result.steps.append(step)
            log.info("install step %d %s: %.2f ms", k, _text(i), ms)
            if self.progress is not None:
                # best-effort: a client that is gone or stuck must not stop the install
                try:
                    await self.progress(
                        {"message": f"[{k + 1}/{len(self.terms)}] {_text(i)}", **step}
                    )
                except Exception:
                    log.info("install: progress listener failed; no more progress events")
                    self.progress = None
            if crash_after is not None and k == crash_after:
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: crash right after step k
            # a turn of the loop between instructions: processes resumed by this step run
            # now (as they would at once on BEAM's other schedulers), not after the script
            await asyncio.sleep(0)
        return self.result

    async def _step(self, i: Any) -> None:
        tag = _tag(i)
        code = self.node.code
        if tag == "point_of_no_return":
            self._at_point_of_no_return()
        elif tag == "load":
            mod, _pre, post = i[1]
            self._snap()
            self.old_vsn[mod] = code.vsn(mod)
            code.load_prepared(self.prepared[mod])
            self._after_load(mod, post)
        elif tag == "remove":
            mod, _pre, post = i[1]
            self._snap()
            self.old_vsn[mod] = code.vsn(mod)
            code.purge(mod)
            code.delete(mod)
            self._after_load(mod, post)
        elif tag == "purge":
            self._snap()
            for m in i[1]:
                code.purge(m)
        elif tag == "suspend":
            await self._suspend(i[1])
        elif tag == "resume":
            for m in i[1]:
                pids = self.suspended.get(m, [])
                rsys.resume_many(pids)
                for p in pids:
                    self.undo.suspended.pop(p, None)
        elif tag == "code_change":
            mode = i[1] if len(i) == 3 else "up"
            for mod, extra in i[-1]:
                await self._code_change(mode, mod, extra)
        elif tag in ("apply", "stop", "start"):
            with collector_running():  # user code, applications and children: waits
                if tag == "apply":
                    await self._apply(i)
                elif tag == "stop":
                    await self._stop(i[1])
                else:
                    await self._start(i[1])
        elif tag == "sync_nodes":
            pass  # one node: every peer has reached the barrier (see docs/release-handler.md)
        elif tag == "restart_emulator":
            self.result.restart = True
        else:  # pragma: no cover - check() refused it already
            raise InstallError(f"illegal instruction {_text(i)}")

    def _snap_sups(self) -> None:
        """Every supervisor's flags, specs and children, by value, for the rollback (specs
        changed by a code_change, children started or stopped by the script)."""
        if self.undo.sups is not None:
            return
        sups: dict[Pid, Any] = {}
        for pid in _supervisors(self.node):
            p = self.node.processes.get(pid)
            snap = rsup.snapshot(p.sys.state) if p is not None and p.sys is not None else None
            if snap is not None:
                sups[pid] = snap
        self.undo.sups = sups

    def _snap(self) -> None:
        if self.undo.snapshot is None:
            self.undo.snapshot = self.node.code.snapshot()

    def _at_point_of_no_return(self) -> None:
        self._snap()
        apps = self.node.apps
        self.undo.path = list(self.node.code.path)
        self.node.code.set_path(self.new_path)
        if isinstance(apps, AppController):
            for name, la in apps.loaded.items():
                self.undo.specs[name] = la.spec
                self.undo.env[name] = dict(la.env)
            for spec in self.new_specs:
                apps.load(spec, self.new_env.get(spec.name))

    def _after_load(self, mod: str, post: str) -> None:
        code = self.node.code
        if code.has_old(mod) and not code.soft_purge(mod):
            self.result.unpurged[mod] = post

    async def _suspend(self, entries: list[Any]) -> None:
        index = self._index(self.node)
        for e in entries:
            mod, t = e if isinstance(e, tuple) else (e, "default")
            if self.opts.suspend_timeout is not None:
                timeout: float | None = _seconds(self.opts.suspend_timeout)
            elif t == "default":
                timeout = DEFAULT_SUSPEND
            elif t == "infinity":
                timeout = None
            else:
                timeout = float(t) / 1000.0
            done = self.undo.suspended
            pids = index.get(mod, [])
            if done:
                pids = [p for p in pids if p not in done]
            with collector_running():  # may wait for busy processes
                res = await rsys.suspend_many(pids, timeout)
            self.suspended.setdefault(mod, []).extend(res.suspended)
            done.update(dict.fromkeys(res.suspended))
            self.result.touched[mod] = self.result.touched.get(mod, 0) + len(res.suspended)
            late = [(p, why) for p, why in res.skipped if why == "timeout"]
            if late:
                pid = late[0][0]
                raise InstallError(
                    f"process {pid} ({mod}) did not suspend within {timeout}s (busy in a "
                    f"callback); raise the instruction's timeout or --suspend-timeout",
                    code="suspend_timeout",
                    details={"pid": str(pid), "module": mod},
                )

    async def _code_change(self, mode: str, mod: str, extra: Any) -> None:
        pids = self.suspended.get(mod, [])
        if not pids:
            return
        vsn = self._code_change_vsn(mode, mod, before_load=mod not in self.old_vsn)
        code = self.node.code
        fn = getattr(code.current(mod), "code_change", None) if code.is_loaded(mod) else None
        # an async code_change is a wait: the collector runs; sync ones are the pause window
        gc_on = collector_running() if inspect.iscoroutinefunction(fn) else contextlib.nullcontext()
        with gc_on:
            errors = await rsys.change_code_many(
                pids,
                mod,
                vsn,
                extra,
                self.code_change_timeout(mod),
                before=self.undo.states,
                copy=_undo_copy,
            )
        if errors:
            pid, err = errors[0]
            raise InstallError(
                f"code_change of {mod} in process {pid} raised {type(err).__name__}: {err}"
                + (f" (and {len(errors) - 1} more processes)" if len(errors) > 1 else ""),
                code="code_change_failed",
                details={"pid": str(pid), "module": mod, "failed": len(errors)},
            )

    async def _apply(self, i: Any) -> None:
        mod, fun, args = i[1]
        apps = self.node.apps
        if mod == "application" and isinstance(apps, AppController):
            name = args[0]
            if fun == "start":
                await apps.start(name, args[1] if len(args) > 1 else "permanent")
                self.undo.started_apps.append(name)
            elif fun == "stop":
                ra = apps.running.get(name)
                if ra is not None:
                    self.undo.stopped_apps.append((name, ra.type))
                await apps.stop(name)
            elif fun == "unload":
                apps.loaded.pop(name, None)
            elif fun != "load":
                raise InstallError(f"unknown application function {fun!r}")
            return
        if mod == "supervisor":
            await self._apply_supervisor(fun, list(args))
            return
        code = self.node.code
        target = (
            code.current(mod)
            if code.is_loaded(mod) or code._locate(mod)
            else (__import__(mod, fromlist=["_"]))
        )
        r = getattr(target, fun)(*args)
        if isinstance(r, types.CoroutineType):
            await r

    async def _apply_supervisor(self, fun: str, args: list[Any]) -> None:
        """The appup cookbook's ``apply supervisor:F(Sup, ...)``; ``Sup`` is a registered
        name, or the callback module of exactly one running supervisor."""
        if fun not in ("restart_child", "terminate_child", "delete_child", "start_child"):
            raise InstallError(
                f"apply supervisor:{fun}: use restart_child, terminate_child, delete_child "
                f"or start_child",
                code="apply_failed",
            )
        if len(args) != 2:
            raise InstallError(f"apply supervisor:{fun} takes [supervisor, id], got {args!r}")
        sup = _resolve_supervisor(self.node, args[0])
        p = self.node.resolve(sup)
        if p is not None:
            self.undo.touched_sups.add(p.pid)
        r = await getattr(rsup, fun)(sup, args[1])
        ok = r == "ok" or (isinstance(r, tuple) and r[0] == "ok")
        if not ok:
            raise InstallError(
                f"apply supervisor:{fun}({args[0]!r}, {args[1]!r}) returned {r!r}",
                code="apply_failed",
            )

    async def _stop(self, mods: list[str]) -> None:
        from relhandler.runtime import supervisor

        for _sup, cid, _pid, pmods in find_processes(self.node):
            if _sup is None:
                continue  # top supervisors are never stopped (OTP)
            for m in mods:
                if m in pmods:
                    self.undo.touched_sups.add(_sup)
                    await supervisor.terminate_child(_sup, cid)
                    self.stopped.setdefault(m, []).append((_sup, cid))

    async def _start(self, mods: list[str]) -> None:
        from relhandler.runtime import supervisor

        for m in mods:
            for sup, cid in self.stopped.pop(m, []):
                await supervisor.restart_child(sup, cid)

    async def rollback(self) -> None:
        """Put code, states, path and app specs back; resume everyone suspended."""
        with collector_running():  # rare, and it may wait for applications
            await self._rollback()

    async def _rollback(self) -> None:
        if os.environ.get("RELHANDLER_TEST_FAIL_ROLLBACK"):
            raise RuntimeError("rollback failure injected by RELHANDLER_TEST_FAIL_ROLLBACK")
        u = self.undo
        apps = self.node.apps
        if isinstance(apps, AppController):
            for name in reversed(u.started_apps):
                try:
                    await apps.stop(name)
                except Exception:
                    log.exception("rollback: stopping %s failed", name)
        if u.snapshot is not None:
            self.node.code.restore(u.snapshot)
        if u.path:
            self.node.code.set_path(u.path)
        # supervisors the script changed first (they read which children run now), then
        # the other states; a supervisor's state is never assigned directly (its children
        # are reconciled). Only those: a child another process added to an untouched
        # supervisor meanwhile is none of the script's doing
        taken = u.sups or {}
        sups: dict[Pid, Any] = {}
        for pid, st in u.states.items():
            if rsup.snapshot(st) is not None:
                sups[pid] = taken.get(pid, st)
        for pid in u.touched_sups:
            if pid not in sups and pid in taken:
                sups[pid] = taken[pid]
        for pid, snap in sups.items():
            try:
                await rsup.restore(pid, snap)
            except Exception:
                log.exception("rollback: restoring supervisor %s failed", pid)
        if isinstance(apps, AppController) and u.specs:
            for name in list(apps.loaded):
                if name not in u.specs:
                    apps.loaded.pop(name)
            for name, spec in u.specs.items():
                apps.load(spec)
                apps.loaded[name].env = u.env[name]
        for pid, state in u.states.items():
            if pid in sups:
                continue
            p = self.node.processes.get(pid)
            if p is not None and isinstance(p.sys, rsys.SysState):
                p.sys.state = state
        if isinstance(apps, AppController):
            for name, type_ in u.stopped_apps:
                await apps.start(name, type_)
        rsys.resume_many(list(u.suspended))
        u.suspended = {}
        log.info("rollback complete: code, %d process states and app specs restored", len(u.states))


def _supervisors(node: Node) -> list[Pid]:
    """Every supervisor in the running applications' trees, top ones first."""
    out: dict[Pid, None] = {}
    apps = node.apps
    if not isinstance(apps, AppController):
        return []

    def walk(sup: Pid) -> None:
        out[sup] = None
        for _cid, typ, _mods, pids in peek_groups(sup):
            if typ == "supervisor":
                for pid in pids:
                    p = node.processes.get(pid)
                    if p is not None and p.behaviour == "supervisor":
                        walk(pid)

    for name in list(apps.order):
        top = apps.top_supervisor(name)
        p = node.processes.get(top) if top is not None else None
        if p is not None and p.behaviour == "supervisor":
            walk(p.pid)
    return list(out)


def _resolve_supervisor(node: Node, ref: Any) -> Pid | str:
    if isinstance(ref, Pid) or not isinstance(ref, str) or node.whereis(ref) is not None:
        return ref  # type: ignore[no-any-return]
    found = [
        pid
        for pid in _supervisors(node)
        if (p := node.processes.get(pid)) is not None and getattr(p.sys, "module", None) == ref
    ]
    if len(found) != 1:
        raise InstallError(
            f"no supervisor registered as {ref!r}"
            + (
                f", and {len(found)} run {ref} as their callback module"
                if found
                else " or running it as its callback module"
            ),
            code="apply_failed",
        )
    return found[0]


def _undo_copy(state: Any) -> Any:
    """The undo log's copy of a state, taken before its code_change: a supervisor's by
    value with its children (supervisor.snapshot), anything else as the preflight copies."""
    if type(state) is not dict:  # the common case first: this runs in the pause window
        snap = rsup.snapshot(state)
        if snap is not None:
            return snap
    return copy_state(state)


def _module_file(base: Path, mod: str) -> Path | None:
    rel = Path(*mod.split("."))
    for p in (base / rel / "__init__.py", base / rel.with_suffix(".py")):
        if p.is_file():
            return p
    return None


def _scratch_module(p: Prepared) -> types.ModuleType:
    """Execute prepared code in a throwaway module (preflight only; nothing installed)."""
    import builtins

    m = types.ModuleType(p.name)
    # its spec and loader: package data reads from the new code's dir
    decorate(m, p.name, p.file, p.is_package, None)
    m.__dict__["__builtins__"] = builtins
    import sys as _sys

    # in sys.modules while it executes, as an import would be (dataclasses, typing and
    # pydantic resolve names through it); the live entry is put back right after
    before = _sys.modules.get(p.name)
    _sys.modules[p.name] = m
    try:
        exec(p.code, m.__dict__)
    finally:
        if before is None:
            _sys.modules.pop(p.name, None)
        else:
            _sys.modules[p.name] = before
    return m


def trial_copy(state: Any) -> Any:
    """The preflight's copy of a live state: :func:`relhandler.runtime.statecopy.copy_state`
    (plain data copied, live resources and unknown objects shared untouched)."""
    return copy_state(state)
