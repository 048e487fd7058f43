"""gen_statem: a generic state machine driving a callback *module*, OTP 25 semantics.

The callback module returns OTP's tuples, so OTP's documentation reads across::

    def callback_mode():   -> "state_functions" | "handle_event_function"
                              | ["state_functions", "state_enter"] (or a tuple)
    def init(args):        -> ("ok", state, data[, actions]) | ("stop", reason) | "ignore"
    # state_functions: one function per state (state names are strings)
    def idle(event_type, content, data):            -> a transition (below)
    # handle_event_function: one function for all states (any state term)
    def handle_event(event_type, content, state, data): -> a transition
    def terminate(reason, state, data):             optional
    def code_change(old_vsn, state, data, extra):   -> ("ok", new_state, new_data)

Event types: ``("call", from_)``, ``"cast"``, ``"info"``, ``"timeout"`` (event timeout),
``"state_timeout"``, ``("timeout", name)`` (generic timeout), ``"internal"`` (next_event)
and ``"enter"`` (state enter calls: content is the old state). Transitions:
``("next_state", s, data[, actions])``, ``("keep_state", data[, actions])``,
``"keep_state_and_data"`` / ``("keep_state_and_data", actions)``, ``("repeat_state",
data[, actions])``, ``"repeat_state_and_data"`` / ``("repeat_state_and_data", actions)``,
``"stop"`` / ``("stop", reason[, data])``, ``("stop_and_reply", reason, replies[, data])``.
Actions (a list, or one action): ``"postpone"`` / ``("postpone", bool)``, ``("reply", from_,
value)``, ``("next_event", type, content)``, ``("timeout", time, content)``,
``("state_timeout", time, content)``, ``(("timeout", name), time, content)`` (time in
seconds, ``"infinity"``/None cancels; ``"cancel"`` and ``"update"`` as in OTP), a bare
number (an event timeout), ``"hibernate"`` (accepted, no effect).

As in gen_server, every callback is looked up on the module's *current* version at
dispatch time, and the state and data are plain data; ``code_change`` is the one place
their shape changes. ``sys.get_state`` gives ``(state, data)``, as OTP's does.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from collections import deque
from typing import Any, NoReturn

from relhandler.errors import ProcessError
from relhandler.runtime import gen_server, timers
from relhandler.runtime._gen import StopRequest, maybe, module_name
from relhandler.runtime._gen import start as _start_process
from relhandler.runtime._gen import stop as _stop_process
from relhandler.runtime._kernel import Exit, Pid, Process, current_process
from relhandler.runtime.sys import SysState

__all__ = ["From", "call", "cast", "reply", "start", "start_link", "stop"]

log = logging.getLogger("relhandler.runtime.gen_statem")

_CoroutineType = types.CoroutineType


def _is_async(fn: Any) -> bool:
    # inspect.iscoroutinefunction is several times slower; this runs once per process
    # in an upgrade of thousands
    co = getattr(fn, "__code__", None)
    return co is not None and bool(co.co_flags & inspect.CO_COROUTINE)


From = gen_server.From

_TIMEOUT_KINDS = ("timeout", "state_timeout")


class _Timeout:
    """A running timeout (key: ``"timeout"``, ``"state_timeout"`` or ``("timeout", name)``,
    which is also its event type). It is its own timer message's payload and, for a zero
    time, its own entry in the event queue, so a cancelled one is told by identity."""

    __slots__ = ("content", "key", "tref")

    def __init__(self, key: Any, content: Any) -> None:
        self.key = key
        self.content = content
        self.tref: Any = None


class _StatemState(SysState):
    __slots__ = (
        "enter_calls",
        "handle_event_mode",
        "mode_of",
        "parent",
        "postponed",
        "queue",
        "timers",
    )

    def __init__(self, proc: Process, module: str) -> None:
        super().__init__(proc, module)
        self.state = (None, None)  # (state, data): what sys.get_state shows
        self.parent: Pid | None = None
        self.mode_of: Any = None  # the module version callback_mode was read from
        self.handle_event_mode = False
        self.enter_calls = False
        # events to handle before the next message (next_event, retried postponed events,
        # zero timeouts); a system request is taken only when it is empty, as in OTP
        self.queue: deque[Any] = deque()
        self.postponed: list[tuple[Any, Any]] = []
        self.timers: dict[Any, _Timeout] = {}

    def cb(self) -> Any:
        return self.proc.node.code.current(self.module)

    def system_code_change(self, module: str, old_vsn: Any, extra: Any) -> Any:
        return self.code_change_with(self.cb(), module, old_vsn, self.state, extra)

    def code_change_with(self, cb: Any, module: str, old_vsn: Any, state: Any, extra: Any) -> Any:
        if module != self.module:
            cb = self.cb()  # OTP calls the process's own callback module, whatever Module
        fn = getattr(cb, "code_change", None)
        if fn is None:
            raise ProcessError(f"{self.module} has no code_change/4; use a soft update")
        args = (old_vsn, state[0], state[1], extra)
        if _is_async(fn):
            # called inside the coroutine: one the preflight closes unrun leaves nothing
            return _async_code_change(fn, args, self.module)
        r = fn(*args)
        if isinstance(r, _CoroutineType):
            return _finish_code_change(r, self.module)
        return _code_change_result(r, self.module)

    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            "postponed": len(self.postponed),
            "timeouts": sorted(map(repr, self.timers)),
        }


async def _async_code_change(fn: Any, args: tuple[Any, ...], module: str) -> Any:
    return _code_change_result(await fn(*args), module)


async def _finish_code_change(coro: Any, module: str) -> Any:
    return _code_change_result(await coro, module)


def _code_change_result(r: Any, module: str) -> Any:
    if isinstance(r, tuple) and len(r) == 3 and r[0] == "ok":
        return (r[1], r[2])
    raise ProcessError(f"{module}.code_change returned {r!r}; expected ('ok', new_state, new_data)")


def _read_mode(srv: _StatemState, cb: Any) -> None:
    """Read ``callback_mode()`` once per module version (OTP: at start and after a code
    change; here after any load, so a soft update that changes the mode works too)."""
    fn = getattr(cb, "callback_mode", None)
    if fn is None:
        raise ProcessError(f"{srv.module} has no callback_mode()", code="bad_callback_mode")
    m = fn()
    modes = [m] if isinstance(m, str) else list(m) if isinstance(m, list | tuple) else [m]
    enter = "state_enter" in modes
    rest = [x for x in modes if x != "state_enter"]
    if len(rest) != 1 or rest[0] not in ("state_functions", "handle_event_function"):
        raise ProcessError(
            f"{srv.module}.callback_mode() returned {m!r}; expected 'state_functions' or "
            f"'handle_event_function', optionally in a list with 'state_enter'",
            code="bad_callback_mode",
        )
    srv.handle_event_mode = rest[0] == "handle_event_function"
    srv.enter_calls = enter
    srv.mode_of = cb


async def _main(module: str, args: Any, ready: asyncio.Future[Any], parent: Pid | None) -> None:
    proc = current_process()
    assert proc is not None
    srv = _StatemState(proc, module)
    srv.parent = parent
    proc.sys = srv
    proc.behaviour = "gen_statem"

    def fail(err: BaseException) -> None:
        if not ready.done():
            ready.set_exception(err)

    try:
        cb = srv.cb()
        _read_mode(srv, cb)
        r = await maybe(cb.init(args))
    except BaseException as e:
        fail(e if isinstance(e, ProcessError) else ProcessError(f"{module}.init crashed: {e!r}"))
        raise
    if r == "ignore":
        if not ready.done():
            ready.set_result("ignore")
        raise Exit("normal")
    if isinstance(r, tuple) and len(r) in (3, 4) and r[0] == "ok":
        srv.state = (r[1], r[2])
        actions = r[3] if len(r) == 4 else []
    elif isinstance(r, tuple) and len(r) == 2 and r[0] == "stop":
        fail(ProcessError(f"{module}.init stopped: {r[1]!r}"))
        raise Exit(r[1])
    else:
        fail(ProcessError(f"{module}.init returned {r!r}; expected ('ok', state, data)"))
        raise Exit(("bad_return_from_init", r))
    if not ready.done():
        ready.set_result(proc.pid)
    try:
        # the initial state is entered: its state enter call has the state itself as old
        await _transition(srv, ("next_state", r[1], r[2], actions), None, init=True)
        await _serve(srv)
    except StopRequest as e:
        await _terminate(srv, e.reason)
        raise Exit(e.reason) from None


async def _serve(srv: _StatemState) -> None:
    queue = srv.queue
    while True:
        if queue:
            ev = queue.popleft()
            if type(ev) is _Timeout:
                if srv.timers.get(ev.key) is not ev:
                    continue  # cancelled or replaced after it was queued
                del srv.timers[ev.key]
                ev = (ev.key, ev.content)
            await _handle(srv, ev)
            continue
        # while suspended, messages (timer messages too) keep queueing
        msg = await srv.next_message()
        srv.in_callback = True
        ev = _event_of(srv, msg)
        if ev is not None:
            await _handle(srv, ev)


def _event_of(srv: _StatemState, msg: Any) -> tuple[Any, Any] | None:
    if type(msg) is tuple and len(msg) == 3:
        tag = msg[0]
        if tag == "$gen_call":
            return (("call", msg[1]), msg[2])
        if tag == "timeout" and type(msg[2]) is _Timeout:
            tm = msg[2]
            if srv.timers.get(tm.key) is not tm:
                return None  # a timer message that was already on its way when cancelled
            del srv.timers[tm.key]
            return (tm.key, tm.content)
        if tag == "EXIT" and srv.parent is not None and msg[1] == srv.parent:
            # OTP: a trapped exit from the parent ends the machine via terminate
            raise StopRequest(msg[2])
    elif type(msg) is tuple and len(msg) == 2 and msg[0] == "$gen_cast":
        return ("cast", msg[1])
    return ("info", msg)


async def _handle(srv: _StatemState, ev: tuple[Any, Any]) -> None:
    if srv.timers:
        tm = srv.timers.pop("timeout", None)  # any event cancels the event timeout
        if tm is not None:
            _cancel(tm)
    # the callback is called here rather than through _state_callback: one coroutine less
    # per event on the hot path
    try:
        r = _invoke(srv, ev[0], ev[1])
        if type(r) is _CoroutineType:
            r = await r
    except asyncio.CancelledError:
        raise
    except BaseException as e:
        await _terminate(srv, e.reason if isinstance(e, Exit) else e)
        raise
    # the common transitions that keep the state, with no actions but replies: nothing
    # else to do (no enter call, no postponed retry, no timer)
    if type(r) is tuple:
        n = len(r)
        tag = r[0]
        if tag == "keep_state_and_data" and n == 2 and _replied(r[1]):
            return
        if tag == "keep_state" and (n == 2 or (n == 3 and _replied(r[2]))):
            srv.state = (srv.state[0], r[1])
            return
        if (
            tag == "next_state"
            and n in (3, 4)
            and r[1] == srv.state[0]
            and (n == 3 or _replied(r[3]))
        ):
            srv.state = (r[1], r[2])
            return
    elif r == "keep_state_and_data":
        return
    await _transition(srv, r, ev)


def _replied(actions: Any) -> bool:
    """Send the replies if ``actions`` is a list of nothing but replies; else False and
    nothing sent (the full transition handles it)."""
    if type(actions) is not list:
        return False
    for a in actions:
        if not (type(a) is tuple and len(a) == 3 and a[0] == "reply"):
            return False
    for a in actions:
        gen_server.reply(a[1], a[2])
    return True


def _invoke(srv: _StatemState, etype: Any, content: Any) -> Any:
    cb = srv.cb()
    if cb is not srv.mode_of:
        _read_mode(srv, cb)
    state, data = srv.state
    if srv.handle_event_mode:
        return cb.handle_event(etype, content, state, data)
    fn = getattr(cb, state, None) if type(state) is str else None
    if fn is None or not callable(fn):
        raise ProcessError(
            f"{srv.module} has no state function {state!r} (callback mode "
            f"state_functions needs one function per state, named by the state)",
            code="undef_state_function",
        )
    return fn(etype, content, data)


async def _state_callback(srv: _StatemState, etype: Any, content: Any) -> Any:
    try:
        r = _invoke(srv, etype, content)
        if isinstance(r, _CoroutineType):
            r = await r
    except asyncio.CancelledError:
        raise
    except BaseException as e:
        await _terminate(srv, e.reason if isinstance(e, Exit) else e)
        raise
    return r


def _parse(r: Any, state: Any, data: Any) -> tuple[str, Any, Any, Any, Any] | None:
    """``(kind, next_state, data, actions, stop_reason)`` of a transition, or None."""
    if type(r) is str:
        if r == "keep_state_and_data":
            return ("keep", state, data, (), None)
        if r == "repeat_state_and_data":
            return ("repeat", state, data, (), None)
        if r == "stop":
            return ("stop", state, data, (), "normal")
        return None
    if type(r) is not tuple or not r:
        return None
    tag, n = r[0], len(r)
    if tag == "next_state" and n in (3, 4):
        return ("next", r[1], r[2], r[3] if n == 4 else (), None)
    if tag == "keep_state" and n in (2, 3):
        return ("keep", state, r[1], r[2] if n == 3 else (), None)
    if tag == "keep_state_and_data" and n == 2:
        return ("keep", state, data, r[1], None)
    if tag == "repeat_state" and n in (2, 3):
        return ("repeat", state, r[1], r[2] if n == 3 else (), None)
    if tag == "repeat_state_and_data" and n == 2:
        return ("repeat", state, data, r[1], None)
    if tag == "stop" and n in (2, 3):
        return ("stop", state, r[2] if n == 3 else data, (), r[1])
    if tag == "stop_and_reply" and n in (3, 4):
        replies = r[2] if isinstance(r[2], list) else [r[2]]
        return ("stop", state, r[3] if n == 4 else data, replies, r[1])
    return None


async def _transition(
    srv: _StatemState, r: Any, ev: tuple[Any, Any] | None, *, init: bool = False
) -> None:
    state, data = srv.state
    t = _parse(r, state, data)
    if t is None:
        await _fail(srv, "bad_return_from_state_function", r)
    kind, nstate, ndata, actions, reason = t
    if kind == "stop":
        await _stop_with(srv, state, ndata, actions, reason, "bad_action_from_state_function")
    try:
        postpone, nexts, touts = _actions(srv, actions, enter=False, init=init)
    except _BadAction as e:
        await _fail(srv, e.what, e.action)
    if postpone and ev is not None:
        srv.postponed.append(ev)
    queue = srv.queue
    changed = init or nstate != state
    if not init and changed:
        # a state change retries the postponed events (after any next_event) and
        # cancels the state timeout
        if srv.postponed:
            queue.extendleft(reversed(srv.postponed))
            srv.postponed = []
        st = srv.timers.pop("state_timeout", None)
        if st is not None:
            _cancel(st)
    if nexts:
        queue.extendleft(reversed(nexts))
    srv.state = (nstate, ndata)
    if srv.enter_calls and (changed or kind == "repeat"):
        await _enter(srv, nstate if init else state, touts)
    _start_timeouts(srv, touts)


async def _enter(srv: _StatemState, old_state: Any, touts: list[tuple[Any, Any, Any]]) -> None:
    """The state enter call(s): only data, replies and timeouts may change there."""
    while True:
        state, data = srv.state
        r = await _state_callback(srv, "enter", old_state)
        t = _parse(r, state, data)
        if t is None or (t[0] == "next" and t[1] != state):
            await _fail(srv, "bad_state_enter_return_from_state_function", r)
        kind, _ns, ndata, actions, reason = t
        if kind == "stop":
            bad = "bad_state_enter_action_from_state_function"
            await _stop_with(srv, state, ndata, actions, reason, bad)
        try:
            _, _, more = _actions(srv, actions, enter=True, init=False)
        except _BadAction as e:
            await _fail(srv, e.what, e.action)
        touts.extend(more)
        srv.state = (state, ndata)
        if kind != "repeat":  # repeat_state from an enter call repeats the enter call
            return


def _actions(
    srv: _StatemState, actions: Any, *, enter: bool, init: bool
) -> tuple[bool, list[tuple[Any, Any]], list[tuple[Any, Any, Any]]]:
    if not isinstance(actions, list | tuple) or (
        isinstance(actions, tuple) and actions and not _is_action_list(actions)
    ):
        actions = [actions]
    bad = (
        "bad_state_enter_action_from_state_function" if enter else "bad_action_from_state_function"
    )
    postpone = False
    nexts: list[tuple[Any, Any]] = []
    touts: list[tuple[Any, Any, Any]] = []
    for a in actions:
        if type(a) is str:
            if a == "postpone" and not (enter or init):
                postpone = True
                continue
            if a == "hibernate":
                continue
            raise _BadAction(bad, a)
        if isinstance(a, bool):
            raise _BadAction(bad, a)
        if isinstance(a, int | float):
            touts.append(("timeout", a, a))  # a bare time: an event timeout (OTP)
            continue
        if type(a) is not tuple or not a:
            raise _BadAction(bad, a)
        tag, n = a[0], len(a)
        if tag == "reply" and n == 3:
            _reply_action(srv, a, bad)
        elif tag == "postpone" and n == 2 and isinstance(a[1], bool) and not (enter or init):
            postpone = a[1]
        elif tag == "hibernate" and n == 2:
            pass
        elif tag == "next_event" and n == 3 and not enter:
            nexts.append((a[1], a[2]))
        elif _is_timeout_key(tag) and n == 2 and a[1] == "cancel":
            touts.append((tag, "cancel", None))
        elif _is_timeout_key(tag) and n in (3, 4):
            time = a[1]
            if not (
                time is None
                or time in ("infinity", "update")
                or (isinstance(time, int | float) and not isinstance(time, bool) and time >= 0)
            ):
                raise _BadAction(bad, a)
            if n == 4 and a[3] not in ([], ()):
                raise _BadAction(bad, a)  # timeout options ({abs, true}) are not supported
            touts.append((tag, time, a[2]))
        else:
            raise _BadAction(bad, a)
    return postpone, nexts, touts


def _is_action_list(t: tuple[Any, ...]) -> bool:
    # a tuple of actions vs. one tuple action: an action tuple starts with its tag
    first = t[0]
    return not (
        (type(first) is str and first in _ACTION_TAGS)
        or (type(first) is tuple and len(first) == 2 and first[0] == "timeout")
    )


_ACTION_TAGS = frozenset(
    {"reply", "postpone", "hibernate", "next_event", "timeout", "state_timeout"}
)


def _is_timeout_key(tag: Any) -> bool:
    if type(tag) is str:
        return tag in _TIMEOUT_KINDS
    return type(tag) is tuple and len(tag) == 2 and tag[0] == "timeout"


class _BadAction(Exception):
    def __init__(self, what: str, action: Any) -> None:
        super().__init__(what, action)
        self.what = what
        self.action = action


def _reply_action(srv: _StatemState, a: Any, bad: str) -> None:
    if not (type(a) is tuple and len(a) == 3 and a[0] == "reply"):
        raise _BadAction(bad, a)
    reply(a[1], a[2])


def _start_timeouts(srv: _StatemState, touts: list[tuple[Any, Any, Any]]) -> None:
    event: tuple[Any, Any] | None = None
    for key, time, content in touts:
        if key == "timeout":
            event = (time, content)  # the last event timeout of the transition counts
        else:
            _set_timeout(srv, key, time, content)
    # an event timeout only starts if no event is queued: one would cancel it at once
    if event is not None and not srv.queue:
        _set_timeout(srv, "timeout", *event)


def _set_timeout(srv: _StatemState, key: Any, time: Any, content: Any) -> None:
    timers_ = srv.timers
    if time == "update":
        tm = timers_.get(key)
        if tm is not None:
            tm.content = content
            return
        time = 0  # OTP: updating a timeout that is not running inserts it as a zero one
    old = timers_.pop(key, None)
    if old is not None:
        _cancel(old)
    if time is None or time in ("infinity", "cancel"):
        return
    tm = _Timeout(key, content)
    timers_[key] = tm
    if time == 0:
        srv.queue.append(tm)  # after the events already queued, before any new message
    else:
        tm.tref = timers.start_timer(time, srv.proc.pid, tm)


def _cancel(tm: _Timeout) -> None:
    if tm.tref is not None:
        timers.cancel_timer(tm.tref)  # a message already sent is dropped at receipt


async def _stop_with(
    srv: _StatemState, state: Any, data: Any, replies: Any, reason: Any, bad: str
) -> NoReturn:
    srv.state = (state, data)
    try:
        for a in replies:
            _reply_action(srv, a, bad)
    except _BadAction as e:
        await _fail(srv, e.what, e.action)
    await _terminate(srv, reason)
    raise Exit(reason)


async def _fail(srv: _StatemState, what: str, value: Any) -> NoReturn:
    err = ProcessError(f"{srv.module}: {what.replace('_', ' ')}: {value!r}", code=what)
    log.error("%s %s: %s", srv.module, srv.proc.pid, err.message)
    await _terminate(srv, (what, value))
    raise Exit((what, value))


async def _terminate(srv: _StatemState, reason: Any) -> None:
    srv.in_callback = True
    for tm in list(srv.timers.values()):
        _cancel(tm)
    srv.timers.clear()
    try:
        fn = getattr(srv.cb(), "terminate", None)
    except Exception:
        return
    if fn is None:
        return
    state, data = srv.state
    try:
        await maybe(fn(reason, state, data))
    except Exception:
        log.exception("%s.terminate raised", srv.module)


# -- client API ----------------------------------------------------------------------


async def start_link(
    module: str | types.ModuleType,
    args: Any = None,
    *,
    name: str | None = None,
    timeout: float | None = 5.0,
) -> Pid:
    """Start a gen_statem linked to the caller; returns once ``init`` has returned.

    Raises ``ProcessError`` if ``init`` stops, crashes, returns something else or takes
    longer than ``timeout`` seconds. Returns None when init answers ``"ignore"``."""
    return await _start(module, args, name=name, link=True, timeout=timeout)


async def start(
    module: str | types.ModuleType,
    args: Any = None,
    *,
    name: str | None = None,
    timeout: float | None = 5.0,
) -> Pid:
    """Start a gen_statem without a link."""
    return await _start(module, args, name=name, link=False, timeout=timeout)


async def _start(
    module: str | types.ModuleType,
    args: Any,
    *,
    name: str | None,
    link: bool,
    timeout: float | None,
) -> Pid:
    mod = module_name(module)
    return await _start_process(  # type: ignore[return-value]  # None: init said 'ignore'
        _main,
        mod,
        (mod, args),
        name=name,
        link=link,
        timeout=timeout,
        initial_call=f"{mod}:init",
    )


async def call(server: Pid | str, request: Any, timeout: float | None = 5.0) -> Any:
    """Send ``request`` as a ``("call", from_)`` event and wait for the reply.

    Errors as ``gen_server.call``: ``NoProcError``, ``CallExitError``, ``CallTimeoutError``."""
    return await gen_server.call(server, request, timeout)


def cast(server: Pid | str, msg: Any) -> None:
    """Send ``msg`` as a ``"cast"`` event; never fails (a dead machine drops it)."""
    gen_server.cast(server, msg)


def reply(from_: Any, value: Any = None) -> None:
    """Reply to a caller: ``reply(from_, value)``, or ``reply([("reply", from_, value),
    ...])`` as OTP's ``gen_statem:reply/1``."""
    if isinstance(from_, list):
        for a in from_:
            gen_server.reply(a[1], a[2])
        return
    gen_server.reply(from_, value)


async def stop(server: Pid | str, reason: Any = "normal", timeout: float | None = 5.0) -> None:
    """Stop a machine: ``terminate(reason, state, data)`` runs, then it exits with
    ``reason``. Raises ``CallTimeoutError`` if it has not exited within ``timeout``."""
    await _stop_process(server, reason, timeout, _StatemState, "gen_statem")
