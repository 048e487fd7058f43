"""The process kernel: pids, processes, mailboxes, links, monitors, the registry, the node.

Everything runs on one asyncio loop, so the tables here are plain dicts touched only from
that loop; no locks. A process is an asyncio Task whose context carries the Process object.

An asyncio task created inside a process (by user code or by a library such as websockets)
is a *child task* of that process: the node's task factory runs it in a context where it is
not the process (``current_process()`` is None, ``owner_process()`` is the process), records
it on the process and cancels it when the process exits. Likewise a transport (a TCP or
Unix connection) opened inside a process belongs to it and is closed when it exits, as an
Erlang port is closed when its owner dies.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
import types
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relhandler.errors import CallExitError, NoProcError

if TYPE_CHECKING:
    from relhandler.runtime.code import CodeServer

__all__ = [
    "Exit",
    "Node",
    "Pid",
    "Process",
    "ProcessInfo",
    "ReceiveTimeout",
    "Ref",
    "current_node",
    "current_process",
    "fail_future",
    "own_transport",
    "owner_process",
    "transport_owner",
]

log = logging.getLogger("relhandler.runtime")

_node_var: contextvars.ContextVar[Node | None] = contextvars.ContextVar(
    "relhandler_node", default=None
)
_proc_var: contextvars.ContextVar[Process | None] = contextvars.ContextVar(
    "relhandler_process", default=None
)
# set (and _proc_var cleared) in a child task: the process the task belongs to
_owner_var: contextvars.ContextVar[Process | None] = contextvars.ContextVar(
    "relhandler_task_owner", default=None
)
# the process whose own task node.spawn is creating (the task factory must not treat it
# as a child of itself)
_spawning: Process | None = None


@dataclass(frozen=True, slots=True, order=True)
class Pid:
    """A process id, printed OTP-style as ``<0.N.0>``; unique for the life of the node."""

    n: int
    node: int = 0

    def __str__(self) -> str:
        return f"<{self.node}.{self.n}.0>"

    __repr__ = __str__

    def __hash__(self) -> int:
        # pids key every process table: the generated hash((n, node)) made each lookup 3×
        # slower; equal pids have equal n, and pids of other nodes are told apart by __eq__
        return self.n

    @classmethod
    def parse(cls, text: str) -> Pid:
        """Parse ``<0.42.0>``."""
        parts = text.strip().strip("<>").split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"not a pid: {text!r}; expected the form <0.42.0>")
        return cls(int(parts[1]), int(parts[0]))


_ref_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Ref:
    """A unique reference (monitors, call tags)."""

    n: int

    def __repr__(self) -> str:
        return f"#Ref<{self.n}>"

    @classmethod
    def make(cls) -> Ref:
        return cls(next(_ref_counter))


class Exit(Exception):
    """Raise ``Exit(reason)`` inside a process to end it with that reason."""

    def __init__(self, reason: Any = "normal") -> None:
        super().__init__(reason)
        self.reason = reason


class ReceiveTimeout(TimeoutError):
    """``receive(timeout=...)`` found no matching message in time."""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A snapshot of one process (``process_info``)."""

    pid: Pid
    name: str | None
    status: str
    message_queue_len: int
    links: tuple[Pid, ...]
    monitors: tuple[Ref, ...]
    trap_exit: bool
    initial_call: str
    behaviour: str | None


def _is_normal(reason: Any) -> bool:
    return isinstance(reason, str) and reason == "normal"


class Process:
    """One lightweight process. Internal: user code sees Pids, not Process objects."""

    __slots__ = (
        "_kill_reason",
        "_waiter",
        "_watchers",
        "alive",
        "behaviour",
        "callers",
        "ctx",
        "exit_reason",
        "initial_call",
        "links",
        "mailbox",
        "monitored_by",
        "monitors",
        "name",
        "node",
        "pid",
        "started",
        "sys",
        "task",
        "tasks",
        "transports",
        "trap_exit",
    )

    def __init__(self, node: Node, pid: Pid, initial_call: str) -> None:
        self.node = node
        self.pid = pid
        self.mailbox: deque[Any] = deque()
        self._waiter: asyncio.Future[Any] | None = None
        self.links: set[Pid] = set()
        self.monitors: dict[Ref, Pid] = {}  # monitors this process holds on others
        self.monitored_by: dict[Ref, Pid] = {}  # monitors others hold on this process
        self._watchers: dict[int, Callable[[Any], None]] = {}  # internal exit callbacks
        # futures of gen_server calls waiting on this process (failed when it exits)
        self.callers: dict[asyncio.Future[Any], None] = {}
        # the contextvars Context the process's task runs in (current_process() is this
        # process there); gen_server's inline calls run its callback in it too
        self.ctx: contextvars.Context | None = None
        self.trap_exit = False
        self.name: str | None = None
        self.task: asyncio.Task[None] | None = None
        # child tasks (asyncio tasks created inside the process), made on first use
        self.tasks: set[asyncio.Task[Any]] | None = None
        # transports opened in the process (closed when it exits), made on first use
        self.transports: weakref.WeakSet[asyncio.BaseTransport] | None = None
        self.started = False
        self.alive = True
        self.exit_reason: Any = None
        self._kill_reason: Any = None
        self.initial_call = initial_call
        # set by behaviours: the generic loop's sys hooks (see runtime/sys.py)
        self.sys: Any = None
        self.behaviour: str | None = None

    # -- mailbox ---------------------------------------------------------------
    def deliver(self, msg: Any) -> None:
        """Append an ordinary message and wake the process if it waits."""
        if not self.alive:
            return
        self.mailbox.append(msg)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def wake(self) -> None:
        """Wake the process if it waits (a system request arrived)."""
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def wait(self) -> asyncio.Future[Any]:
        """A future resolved (with None) at the next delivery or wake; gen_server's
        timeout timer resolves it with True."""
        w = self.node.loop.create_future()
        self._waiter = w
        return w

    def add_watcher(self, fn: Callable[[Any], None]) -> int:
        """Call ``fn(reason)`` when this process exits (no message; used by call())."""
        key = next(self.node._watch_ids)
        self._watchers[key] = fn
        return key

    def remove_watcher(self, key: int) -> None:
        self._watchers.pop(key, None)

    def __repr__(self) -> str:
        return f"<Process {self.pid} {self.initial_call}>"


class Node:
    """A node: the process table, the registry and the code server, on one event loop.

    ``async with Node() as node:`` activates it for the current context, so module-level
    primitives (``spawn``, ``send``...) find it; process tasks inherit the activation.
    Closing kills every process and removes the node's managed modules from ``sys.modules``.
    """

    def __init__(self, *, name: str = "relhandler", node_id: int = 0) -> None:
        self.name = name
        self.node_id = node_id
        self._pids = itertools.count(80)  # low numbers look like OTP's system processes
        self.processes: dict[Pid, Process] = {}
        self.names: dict[str, Pid] = {}
        self._watch_ids = itertools.count(1)
        self.started_at = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        # call deadlines: future → (when, make_error, args); swept every SWEEP seconds
        self._deadlines: dict[
            asyncio.Future[Any], tuple[float, Callable[..., BaseException], tuple[Any, ...]]
        ] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._token: contextvars.Token[Node | None] | None = None
        self._closed = False
        from relhandler.runtime.code import CodeServer

        self.code: CodeServer = CodeServer(self)
        # the application controller is attached by runtime/application.py when used
        self.apps: Any = None
        # gen_server.call runs the callback of an idle server on the caller's turn (see
        # gen_server.call); ``inline_left`` counts such calls until the caller must yield
        self.inline_calls = True
        self.inline_left = self.INLINE_BUDGET
        self.running_inline: Process | None = None  # whose callback runs on a caller's task
        # called with (process, reason) when a process exits with a reason other than normal
        # (the node's event log); it must not raise
        self.exit_hook: Callable[[Process, Any], None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    SWEEP = 0.025  # deadline granularity for call timeouts, in seconds
    INLINE_BUDGET = 64  # inline calls in a row before a caller goes through the loop

    def add_deadline(
        self,
        fut: asyncio.Future[Any],
        timeout: float,
        make_error: Callable[..., BaseException],
        *args: Any,
    ) -> None:
        """Fail ``fut`` with ``make_error(*args, timeout)`` if still pending after ``timeout``
        (checked every ``SWEEP`` s: one timer per node, not one per call)."""
        self._deadlines[fut] = (self.loop.time() + timeout, make_error, (*args, timeout))
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.SWEEP, self._sweep)

    def drop_deadline(self, fut: asyncio.Future[Any]) -> None:
        self._deadlines.pop(fut, None)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        expired = [f for f, (when, _, _) in self._deadlines.items() if f.done() or when <= now]
        for f in expired:
            _, make_error, args = self._deadlines.pop(f)
            if not f.done():
                f.set_exception(make_error(*args))
        if self._deadlines:
            self._sweeper = self.loop.call_later(self.SWEEP, self._sweep)

    # -- lifecycle -------------------------------------------------------------
    async def __aenter__(self) -> Node:
        self.activate()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def activate(self) -> None:
        """Make this the current node for the calling context."""
        self._loop = asyncio.get_running_loop()
        install_task_factory(self._loop)
        self._token = _node_var.set(self)

    def bind(self) -> None:
        """Make this the current node for the calling task's context (control ops)."""
        _node_var.set(self)

    async def close(self) -> None:
        """Kill every process, wait for them, drop managed modules."""
        if self._closed:
            return
        self._closed = True
        procs = list(self.processes.values())
        for p in procs:
            self._kill(p, "shutdown")
        tasks = [p.task for p in procs if p.task is not None and not p.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self.code.close()
        if self._token is not None:
            try:
                _node_var.reset(self._token)
            except ValueError:
                _node_var.set(None)

    # -- processes -------------------------------------------------------------
    def _new_pid(self) -> Pid:
        return Pid(next(self._pids), self.node_id)

    def spawn(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        link: Pid | None = None,
        initial_call: str | None = None,
        setup: Callable[[Process], None] | None = None,
    ) -> Pid:
        """Start ``fn(*args)`` as a new process; optionally linked to ``link``."""
        pid = self._new_pid()
        p = Process(self, pid, initial_call or str(getattr(fn, "__qualname__", repr(fn))))
        self.processes[pid] = p
        if link is not None:
            other = self.processes.get(link)
            if other is not None and other.alive:
                p.links.add(link)
                other.links.add(pid)
            else:
                # linking to a dead process: the new one gets a noproc exit at once
                p._kill_reason = "noproc"
        if setup is not None:
            setup(p)
        ctx = contextvars.copy_context()
        ctx.run(_node_var.set, self)
        ctx.run(_proc_var.set, p)
        ctx.run(_owner_var.set, None)  # spawned from a child task: a process, not a child
        p.ctx = ctx
        loop = self.loop
        if not isinstance(loop.get_task_factory(), _TaskFactory):
            install_task_factory(loop)
        global _spawning
        _spawning = p
        try:
            p.task = loop.create_task(self._run(p, fn, args), context=ctx)
        finally:
            _spawning = None
        return pid

    async def _run(self, p: Process, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        reason: Any = "normal"
        p.started = True
        try:
            if p._kill_reason is not None:
                raise Exit(p._kill_reason)
            r: Any = fn(*args)
            # trampoline: a returned awaitable is a tail call, awaited after its caller's
            # frame is gone, so a loop through a qualified call leaves no old-code frame
            while isinstance(r, Coroutine | asyncio.Future) or _awaitable(r):
                r = await r
        except Exit as e:
            reason = e.reason
        except asyncio.CancelledError:
            reason = p._kill_reason if p._kill_reason is not None else "killed"
        except BaseException as e:
            reason = e
            if not isinstance(e, Exception):
                reason = e
            log.error("process %s (%s) crashed", p.pid, p.initial_call, exc_info=e)
        finally:
            self._exited(p, reason)

    def _exited(self, p: Process, reason: Any) -> None:
        if p.exit_reason is None:
            p.exit_reason = reason
        reason = p.exit_reason
        p.alive = False
        self.processes.pop(p.pid, None)
        children = p.tasks
        if children:
            # the process's tasks end with it, as linked processes would
            for t in list(children):
                t.cancel()
        owned = p.transports
        if owned:
            for tr in list(owned):
                _transport_owner.pop(tr, None)
                if not tr.is_closing():
                    tr.close()
        if p.name is not None and self.names.get(p.name) == p.pid:
            del self.names[p.name]
        w = p._waiter
        p._waiter = None
        if w is not None and not w.done():
            w.cancel()
        if p.callers:
            err = CallExitError(f"{p.pid} exited with {reason!r} during call", reason=reason)
            for fut in p.callers:
                if not fut.done():
                    fut.set_exception(err)
            p.callers.clear()
        watchers = list(p._watchers.values())
        p._watchers.clear()
        for fn in watchers:
            try:
                fn(reason)
            except Exception:  # pragma: no cover - watchers are internal
                log.exception("exit watcher failed")
        for ref, watcher in list(p.monitored_by.items()):
            wp = self.processes.get(watcher)
            if wp is not None:
                wp.monitors.pop(ref, None)
                wp.deliver(("DOWN", ref, "process", p.pid, reason))
        p.monitored_by.clear()
        for ref, target in list(p.monitors.items()):
            tp = self.processes.get(target)
            if tp is not None:
                tp.monitored_by.pop(ref, None)
        hook = self.exit_hook
        if hook is not None and not _is_normal(reason):
            try:
                hook(p, reason)
            except Exception:  # pragma: no cover - the hook swallows its own errors
                log.exception("exit hook failed")
        links = list(p.links)
        p.links.clear()
        link_reason = "killed" if reason == "kill" else reason
        for lp_pid in links:
            lp = self.processes.get(lp_pid)
            if lp is None:
                continue
            lp.links.discard(p.pid)
            self._signal(lp, p.pid, link_reason, from_link=True)

    def _signal(self, target: Process, sender: Pid, reason: Any, *, from_link: bool) -> None:
        """Deliver an exit signal with OTP's rules."""
        if not target.alive:
            return
        if not from_link and isinstance(reason, str) and reason == "kill":
            self._kill(target, "killed")
            return
        if target.trap_exit:
            target.deliver(("EXIT", sender, reason))
            return
        if _is_normal(reason):
            return
        self._kill(target, reason)

    def _kill(self, p: Process, reason: Any) -> None:
        """End ``p`` with ``reason`` as soon as the loop runs it (or now, if not started)."""
        if not p.alive or p._kill_reason is not None:
            return
        p._kill_reason = reason
        t = p.task
        if t is None or not p.started:
            return  # _run checks _kill_reason before running anything
        inline = self.running_inline
        if inline is p or (inline is None and t is asyncio.current_task()):
            raise Exit(reason)  # the running process ends itself
        # (inline, the running task is the *caller's*: killing the caller cancels it)
        t.cancel()

    def whereis(self, name: str) -> Pid | None:
        return self.names.get(name)

    def resolve(self, dest: Pid | str) -> Process | None:
        """The live process for a pid or registered name, or None."""
        if isinstance(dest, str):
            pid = self.names.get(dest)
            if pid is None:
                return None
            dest = pid
        p = self.processes.get(dest)
        return p if p is not None and p.alive else None

    def process(self, dest: Pid | str) -> Process:
        """Like resolve, but raises NoProcError."""
        p = self.resolve(dest)
        if p is None:
            raise NoProcError(f"no process {dest}: it is not alive or not registered")
        return p

    def send(self, dest: Pid | str, msg: Any) -> None:
        """Send ``msg``; to a dead pid it is silently dropped, to an unknown name it raises."""
        if isinstance(dest, str):
            pid = self.names.get(dest)
            if pid is None:
                raise NoProcError(f"send to unregistered name {dest!r}")
            dest = pid
        p = self.processes.get(dest)
        if p is not None:
            p.deliver(msg)

    def register(self, name: str, pid: Pid) -> None:
        p = self.process(pid)
        if name in self.names:
            raise ValueError(f"name {name!r} is already registered to {self.names[name]}")
        if p.name is not None:
            raise ValueError(f"{pid} is already registered as {p.name!r}")
        self.names[name] = pid
        p.name = name

    def unregister(self, name: str) -> None:
        pid = self.names.pop(name, None)
        if pid is None:
            raise ValueError(f"name {name!r} is not registered")
        p = self.processes.get(pid)
        if p is not None:
            p.name = None

    def info(self, pid: Pid) -> ProcessInfo | None:
        p = self.resolve(pid)
        if p is None:
            return None
        status = "running"
        if p._waiter is not None:
            status = "waiting"
        if p.sys is not None and getattr(p.sys, "suspended", False):
            status = "suspended"
        return ProcessInfo(
            pid=p.pid,
            name=p.name,
            status=status,
            message_queue_len=len(p.mailbox),
            links=tuple(sorted(p.links)),
            monitors=tuple(p.monitors),
            trap_exit=p.trap_exit,
            initial_call=p.initial_call,
            behaviour=p.behaviour,
        )

    def iter_processes(self) -> Iterator[Process]:
        return iter(list(self.processes.values()))

    def link(self, a: Process, b_pid: Pid) -> None:
        b = self.processes.get(b_pid)
        if b is None or not b.alive:
            self._signal(a, b_pid, "noproc", from_link=True)
            return
        a.links.add(b_pid)
        b.links.add(a.pid)

    def monitor(self, watcher: Process, target: Pid | str) -> Ref:
        ref = Ref.make()
        t = self.resolve(target)
        if t is None:
            tp = target if isinstance(target, Pid) else Pid(0)
            watcher.deliver(("DOWN", ref, "process", tp, "noproc"))
            return ref
        t.monitored_by[ref] = watcher.pid
        watcher.monitors[ref] = t.pid
        return ref


def fail_future(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """Set ``exc`` on ``fut`` unless it is already done."""
    if not fut.done():
        fut.set_exception(exc)


def _awaitable(r: Any) -> bool:
    return hasattr(r, "__await__") and not isinstance(r, type)


def current_node() -> Node:
    """The active node of the calling context; raises RuntimeError outside one."""
    n = _node_var.get()
    if n is None:
        raise RuntimeError("no relhandler node is active here; use `async with Node():`")
    return n


def current_process() -> Process | None:
    """The process the caller runs in, or None outside any process (and in a child task)."""
    return _proc_var.get()


def owner_process() -> Process | None:
    """In a child task: the process it belongs to; None anywhere else."""
    return _owner_var.get()


class _TaskFactory:
    """The loop's task factory: makes a task created inside a process that process's child.

    The child runs in a copy of the creator's context with the process cleared and the
    owner set, so it neither impersonates the process (``self_pid``) nor competes for its
    mailbox (``receive``); it is recorded on the owner, which cancels it at exit. A task
    created in the context of a process that has already exited is cancelled at once.
    """

    __slots__ = ("prev",)

    def __init__(self, prev: Any) -> None:
        self.prev = prev  # a factory that was installed before ours, kept in the chain

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        ctx: contextvars.Context | None = kw.get("context")
        fresh = ctx is None
        if ctx is None:
            ctx = contextvars.copy_context()
        owner = ctx.get(_proc_var)
        if owner is None:
            owner = ctx.get(_owner_var)
        elif owner is _spawning:
            owner = None  # the process's own task
        if owner is not None and ctx is not owner.ctx:
            if not fresh:
                ctx = ctx.copy()  # never change a context the caller handed in
            ctx.run(_proc_var.set, None)
            ctx.run(_owner_var.set, owner)
            kw["context"] = ctx
        # (a task made with the process's own Context — the runtime running a callback on
        # the process's behalf, e.g. an async code_change — runs *as* the process; it is
        # still recorded, so it ends with the process)
        elif fresh:
            kw.pop("context", None)
        prev = self.prev
        t: asyncio.Task[Any] = (
            prev(loop, coro, **kw) if prev is not None else asyncio.Task(coro, loop=loop, **kw)
        )
        if owner is not None:
            if not owner.alive:
                t.cancel()
            else:
                tasks = owner.tasks
                if tasks is None:
                    tasks = owner.tasks = set()
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        return t


def install_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    """Put the child-task factory on ``loop`` (once; an existing factory is chained), and
    the transport hook (see ``_hook_transports``)."""
    cur = loop.get_task_factory()
    if not isinstance(cur, _TaskFactory):
        loop.set_task_factory(_TaskFactory(cur))
        _hook_transports(loop)


# transport → the process that owns it (weak: a transport that is gone is forgotten)
_transport_owner: weakref.WeakKeyDictionary[asyncio.BaseTransport, Process] = (
    weakref.WeakKeyDictionary()
)


def _hook_transports(loop: asyncio.AbstractEventLoop) -> None:
    """Record which process opens each transport on ``loop``.

    asyncio has no hook for "a transport was made": a selector transport registers its
    reader (``loop._add_reader(fd, transport._read_ready)``) from a callback scheduled in
    the context that created it, so wrapping that one method finds every TCP and Unix
    connection and its creator (a process or one of its tasks). Only the first
    registration counts (later ones are flow control, from whoever reads); ownership moves
    only with ``own_transport``. On a loop without ``_add_reader`` (uvloop) the hook is
    absent and only child tasks are cleaned up at exit.
    """
    orig = getattr(loop, "_add_reader", None)
    if orig is None or getattr(orig, "_relhandler_hook", False):
        return

    def add_reader(fd: Any, callback: Callable[..., Any], *args: Any) -> Any:
        r = orig(fd, callback, *args)
        tr = getattr(callback, "__self__", None)
        if isinstance(tr, asyncio.BaseTransport) and tr not in _transport_owner:
            owner = _proc_var.get() or _owner_var.get()
            if owner is not None:
                own_transport(tr, owner)
        return r

    add_reader._relhandler_hook = True  # type: ignore[attr-defined]
    loop._add_reader = add_reader  # type: ignore[attr-defined]


def own_transport(tr: asyncio.BaseTransport, p: Process | None) -> None:
    """Make ``p`` the owner of ``tr`` (closed when ``p`` exits); None disowns it.

    Erlang's ``controlling_process``: an acceptor hands a connection to the process that
    serves it. A transport given to a process that has already exited is closed at once.
    """
    old = _transport_owner.pop(tr, None)
    if old is not None and old.transports is not None:
        old.transports.discard(tr)
    if p is None:
        return
    if not p.alive:
        if not tr.is_closing():
            tr.close()
        return
    _transport_owner[tr] = p
    owned = p.transports
    if owned is None:
        owned = p.transports = weakref.WeakSet()
    owned.add(tr)


def transport_owner(tr: asyncio.BaseTransport) -> Process | None:
    """The process that owns ``tr``, or None."""
    return _transport_owner.get(tr)


def coroutine_frames(p: Process) -> Iterator[types.FrameType]:
    """Every frame on the process's await chain (innermost last), then on each of its
    child tasks' chains (a child runs code on the process's behalf)."""
    t = p.task
    if t is None or t.done():
        return
    yield from _task_frames(t)
    if p.tasks:
        for c in list(p.tasks):
            if not c.done():
                yield from _task_frames(c)


def _task_frames(t: asyncio.Task[Any]) -> Iterator[types.FrameType]:
    obj: Any = t.get_coro()
    seen = 0
    while obj is not None and seen < 1000:
        seen += 1
        frame = getattr(obj, "cr_frame", None)
        if frame is not None:
            yield frame
            obj = obj.cr_await
            continue
        frame = getattr(obj, "gi_frame", None)
        if frame is not None:
            yield frame
            obj = obj.gi_yieldfrom
            continue
        frame = getattr(obj, "ag_frame", None)
        if frame is not None:
            yield frame
            obj = getattr(obj, "ag_await", None)
            continue
        break
