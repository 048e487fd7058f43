"""The sys protocol: suspend, resume, change_code, get_state, replace_state, get_status.

System requests are handled by a behaviour's generic loop *between* callbacks, never inside
one, and never reorder or drop ordinary messages (they wait in a queue of their own).

Speed by design: every process lives on the node's one event loop, so the batch forms used by
the release handler act directly on a process that is between callbacks — marking it
suspended, changing its state, resuming it — with no message round trip. Only a process in
the middle of a callback must be waited for; it suspends itself when the callback returns.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import CoroutineType
from typing import Any

from relhandler.errors import NoProcError, ProcessError, SysError
from relhandler.runtime._kernel import Pid, Process, current_node, fail_future

__all__ = [
    "Escaped",
    "SuspendResult",
    "SysRequest",
    "SysState",
    "change_code",
    "change_code_many",
    "contained",
    "get_modules",
    "get_state",
    "get_status",
    "replace_state",
    "resume",
    "resume_many",
    "suspend",
    "suspend_many",
    "take_request",
]


class SysState:
    """Per-process sys bookkeeping, owned by a behaviour's generic loop.

    Subclasses (gen_server's loop state) provide ``state``, ``module`` and the
    ``system_code_change`` / ``modules`` hooks.
    """

    __slots__ = (
        "_suspend_waiter",
        "in_callback",
        "module",
        "proc",
        "resumed_at",
        "state",
        "suspend_requested",
        "suspended",
        "suspended_at",
    )

    def __init__(self, proc: Process, module: str) -> None:
        self.proc = proc
        self.module = module
        self.state: Any = None
        self.suspended = False
        self.suspend_requested = False
        self.in_callback = True  # until init has returned
        self._suspend_waiter: asyncio.Future[None] | None = None
        # per-process pause timing, read by benchmarks (perf_counter seconds)
        self.suspended_at = 0.0
        self.resumed_at = 0.0

    # hooks -------------------------------------------------------------------
    def system_code_change(self, module: str, old_vsn: Any, extra: Any) -> Any:
        """Return the new state or an awaitable of it; raise on failure."""
        raise NotImplementedError

    def code_change_with(self, cb: Any, module: str, old_vsn: Any, state: Any, extra: Any) -> Any:
        """What ``system_code_change`` would make of ``state``, with ``cb`` as the code of
        ``module`` (the release handler's preflight passes the new code, not yet loaded,
        and a copy of the state). Returns the new state or a coroutine; raises on failure.

        This default is gen_server's contract, ``code_change(old_vsn, state, extra) ->
        ("ok", new_state)``; gen_statem and gen_event override it."""
        fn = getattr(cb, "code_change", None)
        if fn is None:
            raise ProcessError(f"{module} has no code_change; use a soft update")
        r = fn(old_vsn, state, extra)
        if isinstance(r, CoroutineType):
            return _checked_code_change(r, module)
        if not (isinstance(r, tuple) and len(r) == 2 and r[0] == "ok"):
            raise ProcessError(f"{module}.code_change returned {r!r}; expected ('ok', new_state)")
        return r[1]

    def modules(self) -> list[str]:
        return [self.module]

    def status(self) -> dict[str, Any]:
        return {"module": self.module, "state": self.state, "suspended": self.suspended}

    # called by the generic loop ---------------------------------------------
    def between_callbacks(self) -> None:
        """The loop reached a point between callbacks: honour a pending suspend."""
        self.in_callback = False
        if self.suspend_requested:
            self.suspend_requested = False
            self._mark_suspended()

    async def next_message(self) -> Any:
        """The loop's next ordinary message (it is between callbacks): system requests that
        come first are answered, and while suspended only system requests are taken, the
        other messages keep queueing in order."""
        box = self.proc.mailbox
        while True:
            self.between_callbacks()
            if self.suspended:
                req = take_request(box)
                if req is None:
                    await self.proc.wait()
                else:
                    await self.handle_request(req)
                continue
            if not box:
                await self.proc.wait()
                continue
            msg = box.popleft()
            if type(msg) is SysRequest:
                await self.handle_request(msg)
                continue
            return msg

    def _mark_suspended(self) -> None:
        self.suspended = True
        self.suspended_at = time.perf_counter()
        w = self._suspend_waiter
        self._suspend_waiter = None
        if w is not None and not w.done():
            w.set_result(None)

    def request(self, op: str, arg: Any) -> asyncio.Future[Any]:
        """Queue a system request behind the messages already in the mailbox (as OTP's
        system messages are); a suspended process takes it out of turn."""
        fut: asyncio.Future[Any] = self.proc.node.loop.create_future()
        self.proc.deliver(SysRequest(op, arg, fut))
        return fut

    async def handle_request(self, req: SysRequest) -> None:
        """Answer one system request (called by the loop between callbacks)."""
        if req.fut.done():
            return
        try:
            result = await self._handle(req.op, req.arg)
        except Exception as e:
            if not req.fut.done():
                req.fut.set_exception(e)
        except BaseException:
            # a stop/exit/cancel unwinding the loop: a waiting requester gets NoProcError;
            # the BaseException itself is not parked on the future (stop() never reads it,
            # so asyncio would log "exception was never retrieved")
            if not req.fut.done():
                req.fut.set_exception(
                    NoProcError(f"{self.proc.pid} exited while handling {req.op}")
                )
                req.fut.exception()  # mark retrieved; an awaiting requester still gets it
            raise
        else:
            if not req.fut.done():
                req.fut.set_result(result)

    async def _handle(self, op: str, arg: Any) -> Any:
        if op == "get_state":
            return self.state
        if op == "replace_state":
            new = arg(self.state)
            if inspect.isawaitable(new):
                new = await new
            self.state = new
            return new
        if op == "get_status":
            return self.status()
        if op == "get_modules":
            return self.modules()
        if op == "suspend":
            # OTP's sys:suspend is a system message: it takes effect after the messages
            # queued before it, which old code handles on the state they were sent against
            if not self.suspended:
                self._mark_suspended()
            return None
        if op == "resume":
            if self.suspended:
                self.suspended = False
                self.resumed_at = time.perf_counter()
            return None
        if op == "change_code":
            if not self.suspended:
                raise SysError(
                    f"change_code refused by {self.proc.pid}: the process is not suspended"
                )
            module, old_vsn, extra = arg
            new = self.system_code_change(module, old_vsn, extra)
            if inspect.isawaitable(new):
                new = await new
            self.state = new
            return None
        raise SysError(f"unknown system request {op!r}")


@dataclass(frozen=True, slots=True)
class SysRequest:
    """A system request waiting in a behaviour process's mailbox."""

    op: str
    arg: Any
    fut: asyncio.Future[Any]


def take_request(box: deque[Any]) -> SysRequest | None:
    """Remove and return the first system request in ``box`` (selective receive)."""
    for i, m in enumerate(box):
        if type(m) is SysRequest:
            del box[i]
            return m
    return None


def _sys_of(node: Any, pid: Pid | str) -> SysState:
    p = node.resolve(pid)
    if p is None:
        raise NoProcError(f"no process {pid}")
    s = p.sys
    if not isinstance(s, SysState):
        raise SysError(f"{p.pid} is not a behaviour process; it has no sys protocol")
    return s


@dataclass(frozen=True, slots=True)
class SuspendResult:
    """Outcome of ``suspend_many``: who is suspended now, who was skipped and why."""

    suspended: tuple[Pid, ...]
    skipped: tuple[tuple[Pid, str], ...]


async def suspend_many(pids: Iterable[Pid], timeout: float | None = 5.0) -> SuspendResult:
    """Suspend behaviour processes in one pass.

    A process between callbacks with nothing in its mailbox is marked suspended at once
    (no round trip: a suspend message would be the next thing it reads). Any other gets a
    suspend request queued behind its messages, as OTP's ``sys:suspend`` is a system message
    in mailbox order: the messages sent before the suspend are handled (by the old code)
    first. It is waited for up to ``timeout``; a process that does not make it in time, is
    dead, or has no sys protocol is skipped (as OTP's release handler does), and its
    pending suspend is withdrawn.
    """
    node = current_node()
    done: list[Pid] = []
    skipped: list[tuple[Pid, str]] = []
    waiting: list[tuple[SysState, asyncio.Future[None]]] = []
    fresh: list[Pid] = []  # suspended by this call
    now = time.perf_counter()
    for pid in pids:
        p = node.resolve(pid)
        if p is None:
            skipped.append((pid, "noproc"))
            continue
        s = p.sys
        if not isinstance(s, SysState):
            skipped.append((pid, "not_a_behaviour"))
            continue
        if s.suspended:
            done.append(pid)
            continue
        if not s.in_callback and not p.mailbox:
            s.suspended = True
            s.suspended_at = now
            done.append(pid)
            fresh.append(pid)
            continue
        waiting.append((s, s.request("suspend", None)))
    if waiting:
        try:
            await asyncio.wait([f for _, f in waiting], timeout=timeout)
        except BaseException:
            # cancelled while waiting: withdraw the pending suspends and resume whoever
            # this call suspended, so nobody is left suspended without the caller knowing
            made_it = [s.proc.pid for s, fut in waiting if fut.done()]
            for s, fut in waiting:
                s.suspend_requested = False
                s._suspend_waiter = None
                fut.cancel()
            resume_many([*fresh, *made_it])
            raise
        for s, fut in waiting:
            if fut.done() and not fut.cancelled() and fut.exception() is None and s.proc.alive:
                done.append(s.proc.pid)
            else:
                fut.cancel()  # withdrawn: the loop skips a request whose future is done
                skipped.append((s.proc.pid, "timeout" if s.proc.alive else "noproc"))
    return SuspendResult(tuple(done), tuple(skipped))


async def change_code_many(
    pids: Iterable[Pid],
    module: str,
    old_vsn: Any,
    extra: Any,
    timeout: float | None = None,
    *,
    before: dict[Pid, Any] | None = None,
    copy: Callable[[Any], Any] | None = None,
) -> list[tuple[Pid, BaseException]]:
    """Run ``code_change`` for each suspended process in one pass, in the process.

    The callback runs in the process's own context (``self_pid()`` and
    ``current_process()`` are the process, as in OTP, where it runs in the process); an
    ``async`` one runs as a task in that context. A process whose ``code_change`` raises
    (any ``BaseException`` but a cancellation: ``SystemExit`` from new code too) keeps its
    old state; the errors are returned. ``timeout`` bounds each call: an async one is
    cancelled when it expires, a sync one (which cannot be interrupted) is an error when it
    returns too late; a timeout ends the pass. Processes that are gone are skipped.
    ``before`` (the release handler's undo log) receives, for each process's first code
    change, ``copy(state)`` taken *before* the callback runs (so a callback that mutates
    the state in place, and then fails or not, can be undone), or the state itself when
    ``copy`` is None.
    """
    node = current_node()
    loop = node.loop
    errors: list[tuple[Pid, BaseException]] = []
    for pid in pids:
        p = node.processes.get(pid)
        if p is None:
            continue
        s = p.sys
        if not isinstance(s, SysState) or not s.suspended:
            errors.append((pid, SysError(f"{pid} is not suspended; change_code refused")))
            continue
        if before is not None and pid not in before:
            before[pid] = s.state if copy is None else copy(s.state)
        ctx = p.ctx
        try:
            t0 = time.perf_counter()
            if ctx is None:
                new = s.system_code_change(module, old_vsn, extra)
            else:
                new = ctx.run(s.system_code_change, module, old_vsn, extra)
            if isinstance(new, CoroutineType):  # an async code_change
                try:
                    new = await asyncio.wait_for(
                        loop.create_task(contained(new), context=ctx)
                        if ctx is not None
                        else contained(new),
                        timeout,
                    )
                except TimeoutError:
                    raise SysError(
                        f"code_change did not finish within {timeout}s", code="sys_timeout"
                    ) from None
                except Escaped as e:
                    raise e.error from None
            elif timeout is not None and time.perf_counter() - t0 > timeout:
                # a sync callback cannot be interrupted on the loop: its overrun is found
                # when it returns, and fails the change like any error
                raise SysError(
                    f"code_change took {time.perf_counter() - t0:.3f}s, over its {timeout}s "
                    f"timeout",
                    code="sys_timeout",
                )
        except BaseException as e:  # SystemExit from new code too; not a real cancellation
            if isinstance(e, asyncio.CancelledError) and _cancelling():
                raise
            errors.append((pid, e))
            if isinstance(e, SysError) and e.code == "sys_timeout":
                break  # the others would likely wait as long: a timeout ends the pass
            continue
        s.state = new
    return errors


async def _checked_code_change(coro: Any, module: str) -> Any:
    """The new state of an async gen_server-contract ``code_change``."""
    r = await coro
    if not (isinstance(r, tuple) and len(r) == 2 and r[0] == "ok"):
        raise ProcessError(f"{module}.code_change returned {r!r}; expected ('ok', new_state)")
    return r[1]


class Escaped(Exception):
    """A ``SystemExit``/``KeyboardInterrupt`` out of an async callback, carried as an
    ordinary exception: asyncio re-raises those two out of the loop from a task. The
    original is ``.error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


async def contained(coro: Any) -> Any:
    """Await ``coro``, turning a ``SystemExit``/``KeyboardInterrupt`` into :class:`Escaped`
    (wrap a user's async callback in this before making it a task)."""
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as e:
        raise Escaped(e) from None


def _cancelling() -> bool:
    t = asyncio.current_task()
    return t is not None and t.cancelling() > 0


def resume_many(pids: Iterable[Pid]) -> None:
    """Resume processes in one pass.

    Only a process with messages queued (or a timeout to re-arm) is woken: an idle one
    stays parked on its mailbox and runs at its next message, so resuming 10,000 idle
    processes costs no task switches.
    """
    node = current_node()
    now = time.perf_counter()
    for pid in pids:
        p = node.processes.get(pid)
        if p is None or not isinstance(p.sys, SysState):
            continue
        s = p.sys
        if s.suspended:
            s.suspended = False
            s.resumed_at = now
            if p.mailbox or getattr(s, "timeout", None) is not None:
                p.wake()


async def _request(pid: Pid | str, op: str, arg: Any, timeout: float | None) -> Any:
    node = current_node()
    s = _sys_of(node, pid)
    fut = s.request(op, arg)
    watch = s.proc.add_watcher(
        lambda reason: fail_future(
            fut, NoProcError(f"{s.proc.pid} exited ({reason!r}) during {op}")
        )
    )
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError as e:
        raise SysError(
            f"{s.proc.pid} did not answer {op} within {timeout}s (busy in a callback?)",
            code="sys_timeout",
        ) from e
    finally:
        s.proc.remove_watcher(watch)


async def suspend(pid: Pid | str, timeout: float | None = 5.0) -> None:
    """Suspend one process after its current callback (typed error on timeout)."""
    node = current_node()
    s = _sys_of(node, pid)
    r = await suspend_many([s.proc.pid], timeout)
    if not r.suspended:
        why = r.skipped[0][1] if r.skipped else "unknown"
        raise SysError(
            f"suspend of {s.proc.pid} failed: {why} (waited {timeout}s for its callback)",
            code="sys_timeout" if why == "timeout" else "sys",
        )


async def resume(pid: Pid | str, timeout: float | None = 5.0) -> None:
    """Resume one process: a system request it answers within ``timeout`` seconds (a
    suspended process takes it at once; one that is not suspended answers it in mailbox
    order, so a busy one raises ``SysError(code="sys_timeout")``, as OTP's does)."""
    await _request(pid, "resume", None, timeout)


async def change_code(
    pid: Pid | str, module: str, old_vsn: Any, extra: Any, timeout: float | None = 5.0
) -> None:
    """Ask a suspended process to migrate its state with the current ``code_change``."""
    await _request(pid, "change_code", (module, old_vsn, extra), timeout)


async def get_state(pid: Pid | str, timeout: float | None = 5.0) -> Any:
    """The behaviour state, read between callbacks."""
    return await _request(pid, "get_state", None, timeout)


async def replace_state(
    pid: Pid | str, fn: Callable[[Any], Any], timeout: float | None = 5.0
) -> Any:
    """Replace the state with ``fn(state)`` between callbacks; returns the new state."""
    return await _request(pid, "replace_state", fn, timeout)


async def get_status(pid: Pid | str, timeout: float | None = 5.0) -> dict[str, Any]:
    """Module, state and suspension flag of a behaviour process."""
    r: dict[str, Any] = await _request(pid, "get_status", None, timeout)
    return r


async def get_modules(pid: Pid | str, timeout: float | None = 5.0) -> list[str]:
    """The callback modules a ``dynamic`` child uses (OTP's ``get_modules``)."""
    r: list[str] = await _request(pid, "get_modules", None, timeout)
    return r
