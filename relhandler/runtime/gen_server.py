"""GenServer: a generic server loop driving a callback *module*.

The callback module defines module-level functions (sync or ``async``) and returns OTP's
tuples, so OTP's documentation reads across directly::

    def init(args):                          -> ("ok", state) | ("ok", state, timeout)
                                                | ("stop", reason) | "ignore"
    def handle_call(request, from_, state):  -> ("reply", reply, state[, timeout])
                                                | ("noreply", state[, timeout])
                                                | ("stop", reason, reply, state)
                                                | ("stop", reason, state)
    def handle_cast(msg, state):             -> ("noreply", state[, timeout])
                                                | ("stop", reason, state)
    def handle_info(msg, state):             -> same as handle_cast
    def terminate(reason, state):            optional
    def code_change(old_vsn, state, extra):  -> ("ok", new_state)
    def get_modules(state):                  optional, for ``dynamic`` child specs

A ``timeout`` in these tuples is in seconds (an int or a float; OTP's are milliseconds),
``None`` / ``"infinity"`` / ``"hibernate"`` for none: one unit across the Python API.

Every callback is looked up on the module's *current* version at dispatch time, so loading
a new version takes effect at the next callback, with the state as it is; ``code_change``
is the one place where the state's shape changes. State is plain data: no hidden instance.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from collections.abc import Callable
from typing import Any, NamedTuple

from relhandler.errors import CallTimeoutError, NoProcError, NotAProcessError, ProcessError
from relhandler.runtime._gen import StopRequest, maybe, module_name
from relhandler.runtime._gen import start as start_process
from relhandler.runtime._kernel import (
    Exit,
    Node,
    Pid,
    Process,
    current_node,
    current_process,
    fail_future,
)
from relhandler.runtime.sys import SysRequest, SysState, take_request

__all__ = ["From", "call", "cast", "reply", "spawn_reply", "start", "start_link", "stop"]

log = logging.getLogger("relhandler.runtime.gen_server")

_CoroutineType = types.CoroutineType


class From(NamedTuple):
    """Who is waiting for a reply (OTP's ``{Pid, Tag}``); pass it to ``reply``.

    A named tuple, not a dataclass: one is made per call, on the hottest path."""

    pid: Pid | None
    fut: asyncio.Future[Any]


class _ServerState(SysState):
    __slots__ = ("callbacks", "parent", "parked", "pending", "timeout")

    def __init__(self, proc: Process, module: str, callbacks: Any) -> None:
        super().__init__(proc, module)
        self.parent: Pid | None = None  # the start_link caller (its EXIT means terminate)
        # a fixed object for runtime-internal behaviours (supervisor); None = managed module
        self.callbacks = callbacks
        self.timeout: float | None = None
        # what an inline handle_call left for the loop to finish: (result, error, from_)
        self.pending: tuple[Any, BaseException | None, From] | None = None
        # waiting for the next message with nothing else to do: only then may a call run
        # handle_call inline (not while a system request is being handled, say)
        self.parked = False

    def cb(self) -> Any:
        if self.callbacks is not None:
            return self.callbacks
        return self.proc.node.code.current(self.module)

    def system_code_change(self, module: str, old_vsn: Any, extra: Any) -> Any:
        fn = getattr(self.cb(), "code_change", None)
        if fn is None:
            raise ProcessError(f"{self.module} has no code_change/3; use a soft update")
        r = fn(old_vsn, self.state, extra)
        if type(r) is tuple and len(r) == 2 and r[0] == "ok":
            return r[1]  # the common case, checked here: this runs once per process
        if isinstance(r, _CoroutineType):
            return _finish_code_change(r, self.module)
        return _code_change_result(r, self.module)

    def code_change_with(self, cb: Any, module: str, old_vsn: Any, state: Any, extra: Any) -> Any:
        # a runtime-internal behaviour (the supervisor) has its own code_change contract
        fn = getattr(self.callbacks, "code_change_with", None)
        if fn is not None:
            return fn(cb, module, old_vsn, state, extra)
        return super().code_change_with(cb, module, old_vsn, state, extra)

    def modules(self) -> list[str]:
        fn = getattr(self.cb(), "get_modules", None)
        if fn is not None:
            return list(fn(self.state))
        return [self.module]


async def _finish_code_change(coro: Any, module: str) -> Any:
    return _code_change_result(await coro, module)


def _code_change_result(r: Any, module: str) -> Any:
    if isinstance(r, tuple) and len(r) == 2 and r[0] == "ok":
        return r[1]
    raise ProcessError(f"{module}.code_change returned {r!r}; expected ('ok', new_state)")


async def _server_main(
    module: str, args: Any, callbacks: Any, ready: asyncio.Future[Any], parent: Pid | None
) -> None:
    proc = current_process()
    assert proc is not None
    srv = _ServerState(proc, module, callbacks)
    srv.parent = parent
    proc.sys = srv
    proc.behaviour = "gen_server"
    try:
        r = await maybe(srv.cb().init(args))
    except BaseException as e:
        if not ready.done():
            err = ProcessError(f"{module}.init crashed: {e!r}", details={})
            err.__cause__ = e
            ready.set_exception(err)
        raise
    if r == "ignore":
        if not ready.done():
            ready.set_result("ignore")
        raise Exit("normal")
    if isinstance(r, tuple) and r and r[0] == "ok" and len(r) in (2, 3):
        srv.state = r[1]
        srv.timeout = _timeout_of(r, 2)
    elif isinstance(r, tuple) and len(r) == 2 and r[0] == "stop":
        if not ready.done():
            ready.set_exception(_init_stopped(module, r[1]))
        raise Exit(r[1])
    else:
        err = ProcessError(f"{module}.init returned {r!r}; expected ('ok', state)")
        if not ready.done():
            ready.set_exception(err)
        raise Exit(("bad_return_value", r))
    if not ready.done():
        ready.set_result(proc.pid)
    await _loop(proc, srv)


def _init_stopped(module: str, reason: Any) -> ProcessError:
    """The error the start of a process whose init stopped gets. A supervisor whose child
    failed to start stops with ``("shutdown", ("failed_to_start_child", id, exc))``: the
    message reads as a chain (no repr of reprs), and ``exc`` is the error's ``__cause__``,
    so an application's start can name the innermost failure."""
    if (
        isinstance(reason, tuple)
        and len(reason) == 2
        and reason[0] == "shutdown"
        and isinstance(reason[1], tuple)
        and len(reason[1]) == 3
        and reason[1][0] == "failed_to_start_child"
        and isinstance(reason[1][2], BaseException)
    ):
        _, (_, child, exc) = reason
        err = ProcessError(f"{module}.init stopped: child {child!r} failed to start: {exc}")
        err.__cause__ = exc
        return err
    return ProcessError(f"{module}.init stopped: {reason!r}")


def _timeout_of(r: tuple[Any, ...], idx: int) -> float | None:
    # seconds, as everywhere in the Python API (an int too: 5 is five seconds, not OTP's
    # milliseconds); None, "infinity" or "hibernate" for no timeout
    if len(r) > idx:
        t = r[idx]
        if t == "hibernate" or t == "infinity" or t is None:
            return None
        return float(t)
    return None


async def _loop(proc: Process, srv: _ServerState) -> None:
    try:
        await _serve(proc, srv)
    except StopRequest as e:
        await _terminate(srv, e.reason)
        raise Exit(e.reason) from None


async def _serve(proc: Process, srv: _ServerState) -> None:
    box = proc.mailbox
    loop = proc.node.loop
    while True:
        if srv.pending is not None:
            await _finish_inline(srv)
        srv.between_callbacks()
        if srv.suspended:
            # only system requests are taken; ordinary messages keep queueing, in order
            req = take_request(box)
            if req is None:
                await proc.wait()
            else:
                await srv.handle_request(req)
            continue
        if not box:
            w = proc.wait()
            if srv.timeout is None:
                srv.parked = True
                try:
                    await w
                finally:
                    srv.parked = False
                continue
            handle = loop.call_later(srv.timeout, _time_out, w)
            try:
                fired = await w
            finally:
                handle.cancel()
            # only the timer fires a timeout: a wake with nothing queued (a resume) loops
            # and re-arms it in full, as OTP restarts it after system messages
            if fired and not box and not srv.suspended:
                srv.timeout = None
                await _dispatch(srv, "timeout", is_info=True)
            continue
        msg = box.popleft()
        if type(msg) is SysRequest:
            await srv.handle_request(msg)
            continue
        srv.in_callback = True
        await _dispatch(srv, msg)


def _time_out(w: asyncio.Future[Any]) -> None:
    if not w.done():
        w.set_result(True)


async def _dispatch(srv: _ServerState, msg: Any, *, is_info: bool = False) -> None:
    # the call and cast/info paths are written out separately on purpose: this is the hot
    # path of every message, and a shared helper coroutine would cost a frame per message
    srv.in_callback = True
    cb = srv.cb()
    state = srv.state
    if not is_info and type(msg) is tuple and len(msg) == 3 and msg[0] == "$gen_call":
        from_: From = msg[1]
        try:
            r = cb.handle_call(msg[2], from_, state)
            if isinstance(r, _CoroutineType):
                r = await r
        except BaseException as e:
            await _terminate(srv, e.reason if isinstance(e, Exit) else e)
            raise
        if type(r) is tuple and len(r) == 3 and r[0] == "reply":
            fut = from_.fut
            if not fut.done():
                fut.set_result(r[1])
            srv.state = r[2]
            srv.timeout = None
            return
        await _call_result(srv, r, from_)
        return
    if (
        type(msg) is tuple
        and len(msg) == 3
        and msg[0] == "EXIT"
        and srv.parent is not None
        and msg[1] == srv.parent
    ):
        # OTP: a trapped exit from the parent (the supervisor) ends the server via terminate
        await _stop(srv, msg[2])
    if not is_info and type(msg) is tuple and len(msg) == 2 and msg[0] == "$gen_cast":
        fn, arg = cb.handle_cast, msg[1]
        name = "handle_cast"
    else:
        fn = getattr(cb, "handle_info", None)
        arg = msg
        name = "handle_info"
        if fn is None:
            log.warning("%s %s: unexpected message %r", srv.module, srv.proc.pid, msg)
            return
    try:
        r = fn(arg, state)
        if isinstance(r, _CoroutineType):
            r = await r
    except BaseException as e:
        await _terminate(srv, e.reason if isinstance(e, Exit) else e)
        raise
    tag = r[0] if type(r) is tuple else None
    if tag == "noreply":
        srv.state = r[1]
        srv.timeout = _timeout_of(r, 2) if len(r) > 2 else None
        return
    if tag == "stop" and len(r) == 3:
        srv.state = r[2]
        await _stop(srv, r[1])
    await _bad_return(srv, name, r)


async def _call_result(srv: _ServerState, r: Any, from_: From) -> None:
    """Act on what ``handle_call`` returned (all but the plain 3-tuple reply)."""
    tag = r[0] if type(r) is tuple else None
    if tag == "reply" and len(r) in (3, 4):
        if not from_.fut.done():
            from_.fut.set_result(r[1])
        srv.state = r[2]
        srv.timeout = _timeout_of(r, 3)
        return
    if tag == "noreply" and len(r) in (2, 3):
        srv.state = r[1]
        srv.timeout = _timeout_of(r, 2)
        return
    if tag == "stop" and len(r) == 4:
        if not from_.fut.done():
            from_.fut.set_result(r[2])
        srv.state = r[3]
        await _stop(srv, r[1])
    if tag == "stop" and len(r) == 3:
        srv.state = r[2]
        await _stop(srv, r[1])
    await _bad_return(srv, "handle_call", r)


async def _finish_inline(srv: _ServerState) -> None:
    """The server's own turn after an inline ``handle_call`` that did not end in a plain
    reply: it raised (the server terminates with the error) or asked for a timeout, a stop
    or something invalid. Runs before the loop honours a suspend (``in_callback`` is still
    set), so the outcome lands before any upgrade, as if the server had run it itself."""
    assert srv.pending is not None
    r, err, from_ = srv.pending
    srv.pending = None
    if err is None and isinstance(r, _CoroutineType):
        try:
            r = await r  # a handle_call that returned a coroutine: its rest runs here
        except BaseException as e:
            err = e
    if err is not None:
        await _terminate(srv, err.reason if isinstance(err, Exit) else err)
        raise err
    await _call_result(srv, r, from_)


async def _bad_return(srv: _ServerState, name: str, r: Any) -> None:
    err = ProcessError(f"{srv.module}.{name} returned {r!r}; see gen_server's return tuples")
    await _terminate(srv, err)
    raise Exit(("bad_return_value", r))


async def _stop(srv: _ServerState, reason: Any) -> None:
    await _terminate(srv, reason)
    raise Exit(reason)


async def _terminate(srv: _ServerState, reason: Any) -> None:
    srv.in_callback = True
    fn = getattr(srv.cb(), "terminate", None)
    if fn is None:
        return
    try:
        r = fn(reason, srv.state)
        if isinstance(r, _CoroutineType):
            await r
    except Exception:
        log.exception("%s.terminate raised", srv.module)


async def _start(
    module: str | types.ModuleType,
    args: Any,
    *,
    name: str | None,
    link: bool,
    timeout: float | None,
    callbacks: Any = None,
) -> Pid:
    mod = module_name(module)
    return await start_process(  # type: ignore[return-value]  # None: init said 'ignore'
        _server_main,
        mod,
        (mod, args, callbacks),
        name=name,
        link=link,
        timeout=timeout,
        initial_call=f"{mod}:init",
    )


async def start_link(
    module: str | types.ModuleType,
    args: Any = None,
    *,
    name: str | None = None,
    timeout: float | None = 5.0,
) -> Pid:
    """Start a gen_server linked to the caller; returns once ``init`` has returned.

    Raises ``ProcessError`` if ``init`` stops, crashes or does not return within ``timeout``
    seconds (None: wait forever); a late child is unlinked, then killed, so a caller that
    catches the error lives on. Returns None when init answers ``"ignore"``.
    """
    return await _start(module, args, name=name, link=True, timeout=timeout)


async def start(
    module: str | types.ModuleType,
    args: Any = None,
    *,
    name: str | None = None,
    timeout: float | None = 5.0,
) -> Pid:
    """Start a gen_server without a link."""
    return await _start(module, args, name=name, link=False, timeout=timeout)


async def call(server: Pid | str, request: Any, timeout: float | None = 5.0) -> Any:
    """Send ``request`` and wait for the reply.

    Raises ``NoProcError`` if the server is not alive, ``CallExitError`` (with ``reason``) if
    it exits before replying, ``CallTimeoutError`` after ``timeout`` seconds.
    """
    node = current_node()
    p = node.resolve(server)
    if p is None:
        raise NoProcError(f"call to {server}: no such process")
    fut: asyncio.Future[Any] = node.loop.create_future()
    me = current_process()
    from_ = From(me.pid if me is not None else None, fut)
    s = p.sys
    w = p._waiter
    if (
        type(s) is _ServerState
        and s.parked
        and w is not None
        and not w.done()
        and not s.in_callback
        and not s.suspended
        and not p.mailbox
        and p._kill_reason is None
        and node.inline_left
        and node.inline_calls
    ):
        node.inline_left -= 1
        r = _inline_call(node, p, s, request, from_)
        if me is not None and me._kill_reason is not None:
            raise Exit(me._kill_reason)  # the callback sent the caller an exit signal
        if r is not _QUEUED:
            return r
    else:
        node.inline_left = node.INLINE_BUDGET  # this call yields to the loop
        p.deliver(("$gen_call", from_, request))
    # the server's exit fails every pending call (a cheap monitor); the timeout is checked
    # by the node's deadline sweep instead of one timer per call
    callers = p.callers
    callers[fut] = None
    if timeout is not None:
        node.add_deadline(fut, timeout, _call_timeout_error, p.pid)
    try:
        return await fut
    finally:
        callers.pop(fut, None)
        if timeout is not None:
            node.drop_deadline(fut)


_QUEUED: Any = object()


def _inline_call(node: Node, p: Process, s: _ServerState, request: Any, from_: From) -> Any:
    """Run ``handle_call`` of an idle server now, on the caller's turn of the loop.

    The server waits for its next message with an empty mailbox, not suspended and with no
    timeout armed: handling the request now is exactly what it would do next, so order and
    semantics are kept, and a call costs no trip through the event loop (two task switches,
    which cap pure asyncio at ~160k calls/s here). The callback runs in the server's own
    contextvars Context (``current_process()`` is the server there). Returns the reply, or
    ``_QUEUED`` when the caller must wait on its future: ``noreply``, or an outcome only the
    server's own loop may act on — an error, a stop, a timeout, or a coroutine (an ``async``
    handle_call: the server awaits it in its own task) — left in ``s.pending``.
    """
    s.in_callback = True
    node.running_inline = p
    try:
        r = p.ctx.run(s.cb().handle_call, request, from_, s.state)  # type: ignore[union-attr]
    except BaseException as e:
        s.pending = (None, e, from_)
        p.wake()
        return _QUEUED
    finally:
        node.running_inline = None
    if type(r) is tuple:
        n = len(r)
        if n == 3 and r[0] == "reply":
            s.state = r[2]
            s.in_callback = False
            fut = from_.fut
            return fut.result() if fut.done() else r[1]  # an earlier reply() wins
        if n == 2 and r[0] == "noreply":
            s.state = r[1]
            s.in_callback = False
            return _QUEUED
    s.pending = (r, None, from_)
    p.wake()
    return _QUEUED


def _call_timeout_error(pid: Pid, timeout: float) -> BaseException:
    return CallTimeoutError(f"call to {pid} got no reply within {timeout}s")


def cast(server: Pid | str, msg: Any) -> None:
    """Send ``msg`` to ``handle_cast``; never fails (a dead server drops it)."""
    node = current_node()
    p = node.resolve(server)
    if p is not None:
        p.deliver(("$gen_cast", msg))


def reply(from_: From, value: Any) -> None:
    """Reply to a caller later (after returning ``("noreply", state)`` from handle_call)."""
    if not from_.fut.done():
        from_.fut.set_result(value)


def spawn_reply(from_: From, fn: Callable[..., Any], *args: Any) -> Pid:
    """Answer ``from_`` later with what ``await fn(*args)`` returns, computed in a new
    worker process linked to the caller (OTP's ``noreply`` + ``gen_server:reply`` from a
    spawned process, in one call).

    Use it in ``handle_call`` for slow work, then return ``("noreply", state)``: the server
    goes straight back to its loop, so it serves other callers and can be suspended and
    upgraded while the work runs::

        def handle_call(req, from_, state):
            if req[0] == "lookup":
                gen_server.spawn_reply(from_, backend.lookup, req[1])
                return ("noreply", state)

    If ``fn`` raises, the caller's ``call`` raises that exception and the worker exits
    ``normal`` (the server is not touched). The worker is linked to the server: a server
    that exits abnormally takes it down, and a worker killed from outside (``exit(w,
    "kill")``, a hard purge of the code it runs) takes the server down too, as in OTP.
    ``fn`` must not block the loop (CPU work: ``loop.run_in_executor``). Returns the
    worker's pid.
    """
    me = current_process()
    if me is None:
        raise NotAProcessError(
            "gen_server.spawn_reply must be called by the server (in handle_call), "
            "not outside a process or in an asyncio task"
        )
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return me.node.spawn(
        _reply_worker, from_, fn, args, link=me.pid, initial_call=f"spawn_reply:{name}"
    )


async def _reply_worker(from_: From, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        r = fn(*args)
        while isinstance(r, _CoroutineType) or inspect.isawaitable(r):
            r = await r
    except (Exit, asyncio.CancelledError):
        raise  # killed or told to exit: a signal, not the answer
    except Exception as e:
        fail_future(from_.fut, e)
        return
    reply(from_, r)


async def stop(server: Pid | str, reason: Any = "normal", timeout: float | None = 5.0) -> None:
    """Stop a server: ``terminate(reason, state)`` runs, then it exits with ``reason``.

    Raises ``CallTimeoutError`` if it has not exited within ``timeout`` seconds (busy in a
    callback); the stop request stays queued and is honoured when that callback returns.
    """
    node = current_node()
    p = node.process(server)
    task = p.task
    s = p.sys

    def _do_stop(state: Any) -> Any:
        raise StopRequest(reason)

    if isinstance(s, _ServerState):
        s.request("replace_state", _do_stop)
    if task is not None:
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            # OTP's gen_server:stop exits with timeout; saying nothing would claim a stop
            # that did not happen (the request stays queued, as OTP's does)
            raise CallTimeoutError(
                f"stop of {p.pid} did not finish within {timeout}s (busy in a callback?)"
            )
