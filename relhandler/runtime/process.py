"""Process primitives acting on the current node and process (OTP's erlang BIFs).

Process functions are ``async def``. A process must never block the event loop: CPU work or
blocking I/O belongs in an executor (``await loop.run_in_executor(...)``); a blocked loop
stalls every process of the node, the control channel and any upgrade.

A process function may ``return`` an unawaited coroutine: that is a tail call, awaited by the
runtime after the current frame is gone (see runtime.md, *Tail calls*).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

from relhandler.errors import NoSuchModuleError, NotAProcessError
from relhandler.runtime._kernel import (
    Exit,
    Pid,
    ProcessInfo,
    ReceiveTimeout,
    Ref,
    current_node,
    current_process,
    owner_process,
)

if TYPE_CHECKING:
    from relhandler.runtime._kernel import Node

__all__ = [
    "Exit",
    "Pid",
    "ProcessInfo",
    "ReceiveTimeout",
    "Ref",
    "demonitor",
    "exit",
    "forward",
    "link",
    "monitor",
    "process_info",
    "receive",
    "register",
    "registered",
    "remote_function",
    "run_in_process",
    "self_pid",
    "send",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "trap_exit",
    "unlink",
    "unregister",
    "whereis",
]

ProcFn = Callable[..., Awaitable[Any]]


def _me() -> Any:
    p = current_process()
    if p is None:
        _not_a_process()
    return p


def _not_a_process() -> NoReturn:
    owner = owner_process()
    if owner is not None:
        raise NotAProcessError(
            f"this primitive needs a process, but it was called in an asyncio task that "
            f"process {owner.pid} created: a task belongs to its process but is not one "
            f"(no pid, no mailbox); spawn a process instead, or take self_pid() before "
            f"creating the task and send() to it"
        )
    raise NotAProcessError("this primitive must be called inside a relhandler process")


def self_pid() -> Pid:
    """The calling process's pid (Erlang's ``self()``).

    Raises ``NotAProcessError`` outside a process, and in an asyncio task created inside
    one: the task is the process's child, not the process (see runtime.md, *Tasks*).
    """
    return _me().pid  # type: ignore[no-any-return]


def spawn(fn: ProcFn, *args: Any) -> Pid:
    """Start ``fn(*args)`` as a new process."""
    return current_node().spawn(fn, *args)


def spawn_link(fn: ProcFn, *args: Any) -> Pid:
    """Start a process linked to the caller (atomically)."""
    return current_node().spawn(fn, *args, link=self_pid())


def spawn_monitor(fn: ProcFn, *args: Any) -> tuple[Pid, Ref]:
    """Start a process and monitor it (atomically)."""
    node = current_node()
    pid = node.spawn(fn, *args)
    return pid, node.monitor(_me(), pid)


def send(dest: Pid | str, msg: Any) -> None:
    """Send ``msg`` to a pid (dropped silently if dead) or a registered name."""
    current_node().send(dest, msg)


async def receive(timeout: float | None = None, match: Callable[[Any], bool] | None = None) -> Any:
    """Take the first message (or the first for which ``match`` is true) from the mailbox.

    Messages that do not match stay queued in order. Raises ``ReceiveTimeout`` after
    ``timeout`` seconds without a matching message (``timeout=0`` polls).
    """
    p = _me()
    box = p.mailbox
    loop = p.node.loop
    deadline = None if timeout is None else loop.time() + timeout
    scanned = 0  # messages already checked against `match`
    while True:
        if match is None:
            if box:
                return box.popleft()
        else:
            n = len(box)
            for i in range(scanned, n):
                m = box[i]
                if match(m):
                    del box[i]
                    return m
            scanned = n
        if deadline is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ReceiveTimeout("receive timed out")
            w = p.wait()
            handle = loop.call_later(remaining, _wake_waiter, w)
            try:
                await w
            finally:
                handle.cancel()
        else:
            await p.wait()


def _wake_waiter(w: asyncio.Future[None]) -> None:
    if not w.done():
        w.set_result(None)


def link(pid: Pid) -> None:
    """Link the caller with ``pid`` (a dead pid sends the caller a ``noproc`` exit)."""
    me = _me()
    me.node.link(me, pid)


def unlink(pid: Pid) -> None:
    me = _me()
    me.links.discard(pid)
    other = me.node.processes.get(pid)
    if other is not None:
        other.links.discard(me.pid)


def monitor(target: Pid | str) -> Ref:
    """Monitor a process: a ``("DOWN", ref, "process", pid, reason)`` message when it exits."""
    me = _me()
    return me.node.monitor(me, target)  # type: ignore[no-any-return]


def demonitor(ref: Ref, *, flush: bool = False) -> None:
    """Stop monitoring; with ``flush`` drop an already delivered DOWN message for ``ref``."""
    me = _me()
    target = me.monitors.pop(ref, None)
    if target is not None:
        t = me.node.processes.get(target)
        if t is not None:
            t.monitored_by.pop(ref, None)
    if flush:
        for m in list(me.mailbox):
            if isinstance(m, tuple) and len(m) == 5 and m[0] == "DOWN" and m[1] == ref:
                me.mailbox.remove(m)


def exit(pid: Pid | str, reason: Any) -> None:
    """Send an exit signal: ``"kill"`` cannot be trapped (the target dies ``killed``);
    ``"normal"`` is ignored unless trapped; other reasons kill non-trapping targets."""
    node = current_node()
    target = node.resolve(pid)
    if target is None:
        return
    me = current_process()
    sender = me.pid if me is not None else Pid(0, node.node_id)
    if me is not None and target is me and not me.trap_exit and reason != "normal":
        raise Exit("killed" if reason == "kill" else reason)
    node._signal(target, sender, reason, from_link=False)


def trap_exit(flag: bool = True) -> bool:
    """Set the caller's trap_exit flag; returns the previous value."""
    me = _me()
    old: bool = me.trap_exit
    me.trap_exit = flag
    return old


def register(name: str, pid: Pid | None = None) -> None:
    """Register ``pid`` (default: the caller) under ``name``."""
    current_node().register(name, pid if pid is not None else self_pid())


def unregister(name: str) -> None:
    current_node().unregister(name)


def whereis(name: str) -> Pid | None:
    return current_node().whereis(name)


def registered() -> list[str]:
    return sorted(current_node().names)


def process_info(pid: Pid) -> ProcessInfo | None:
    """A snapshot of a live process, or None."""
    return current_node().info(pid)


def forward(source: AsyncIterable[Any], tag: str, *, backlog: int = 256) -> asyncio.Task[None]:
    """Deliver each item of ``source`` to the calling process as ``(tag, item)``, then
    ``(tag + "_closed", None)`` at its end, or ``(tag + "_closed", exc)`` if it raised.

    The bridge from an asyncio library to the mailbox (``forward(ws, "ws")`` for a
    websockets connection): the loop runs in a child task of the caller, in runtime code,
    so the process's own module code runs only in ``handle_info`` — in its current
    version — and an upgrade never finds the forwarder in old code (a ``async for`` loop
    of your own in a task would be old code after the next load, and a purge kills its
    process). Flow control as for sockets: the task stops taking items while the process
    has ``backlog`` or more messages queued. Cancelled (and the source's iteration with
    it) when the process exits; returns the task.
    """
    me = _me()
    return me.node.loop.create_task(_forward(me, source, tag, backlog))  # type: ignore[no-any-return]


async def _forward(p: Any, source: AsyncIterable[Any], tag: str, backlog: int) -> None:
    err: BaseException | None = None
    try:
        async for item in source:
            p.deliver((tag, item))
            delay = 0.001
            spins = 0
            while len(p.mailbox) >= backlog and p.alive:
                if spins < 3:
                    spins += 1
                    await asyncio.sleep(0)
                else:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        err = e
    p.deliver((tag + "_closed", err))


async def run_in_process(
    node: Node,
    fn: Callable[..., Any],
    *args: Any,
    initial_call: str = "rpc",
    spawned: list[Pid] | None = None,
) -> Any:
    """Run ``fn(*args)`` (sync or async) in a fresh process of ``node``, like OTP's rpc, and
    return its value or raise what it raised. Called from outside any process (an op of the
    control server); ``spawned`` receives the pid, for a caller that may have to kill it."""
    fut: asyncio.Future[Any] = node.loop.create_future()

    async def body() -> None:
        try:
            r = fn(*args)
            if asyncio.iscoroutine(r):
                r = await r
            if not fut.done():
                fut.set_result(r)
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e)
            raise

    pid = node.spawn(body, initial_call=initial_call)
    if spawned is not None:
        spawned.append(pid)
    return await fut


async def remote_function(
    node: Node,
    module: str,
    function: str,
    loading: contextlib.AbstractAsyncContextManager[Any] | None = None,
) -> Callable[..., Any]:
    """``module:function`` as a remote call reaches it: a managed module through the code
    server (its current version), anything else (stdlib, bundled deps) by an ordinary
    import. A load of a module not loaded yet changes the module table: it runs inside
    ``loading`` (the release handler's lock, so not under an install). Raises
    ``ImportError`` or ``AttributeError``."""
    code = node.code
    loads = not code.is_loaded(module) and sys.modules.get(module) is None
    async with loading if loading is not None and loads else contextlib.nullcontext():
        try:
            target: Any = code.live(module)
        except NoSuchModuleError:
            target = importlib.import_module(module)
    fn: Callable[..., Any] = getattr(target, function)
    return fn
