"""gen_event: event managers and their handlers, OTP 25 semantics.

A manager is a process with no callback module of its own; handlers are callback
*modules* installed into it, each with its own state. A handler is named by its module
(``"app.log_handler"``) or by ``(module, id)`` to install one module several times::

    def init(args):                  -> ("ok", state) | ("ok", state, "hibernate")
                                        | ("error", reason)
    def handle_event(event, state):  -> ("ok", state[, "hibernate"]) | "remove_handler"
                                        | ("swap_handler", args1, state, handler2, args2)
    def handle_call(request, state): -> ("ok", reply, state[, "hibernate"])
                                        | ("remove_handler", reply)
                                        | ("swap_handler", reply, args1, state, handler2, args2)
    def handle_info(info, state):    -> as handle_event (optional)
    def terminate(arg, state):       optional; its result goes to swap_handler's new init
    def code_change(old_vsn, state, extra): -> ("ok", new_state)

Every handler callback is looked up on its module's *current* version at dispatch time.
``add_sup_handler`` makes the caller the handler's supervisor, as in OTP (linked; its exit
removes the handler; the handler's end reaches it as ``("gen_event_EXIT", handler, why)``).
The newest handler gets each event first (OTP's order). A handler that raises or returns
something else is removed (``terminate(("error", ...), state)``), the manager goes on.
``sys.get_state`` gives ``[(module, id, state), ...]``, newest first, as OTP's does (id
None for a handler installed by module name). ``get_modules`` answers the handler modules,
so a manager's child spec says ``"modules": "dynamic"`` and an appup ``update`` of a
handler module suspends the managers that run it and migrates each such handler's state.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from typing import Any

from relhandler.errors import ProcessError
from relhandler.runtime import gen_server
from relhandler.runtime._gen import StopRequest, maybe
from relhandler.runtime._gen import start as _start_process
from relhandler.runtime._gen import stop as _stop_process
from relhandler.runtime._kernel import Exit, Pid, Process, current_node, current_process
from relhandler.runtime.sys import SysState

__all__ = [
    "add_handler",
    "add_sup_handler",
    "call",
    "delete_handler",
    "notify",
    "start",
    "start_link",
    "stop",
    "swap_handler",
    "swap_sup_handler",
    "sync_notify",
    "which_handlers",
]

log = logging.getLogger("relhandler.runtime.gen_event")

_CoroutineType = types.CoroutineType


def _is_async(fn: Any) -> bool:
    # inspect.iscoroutinefunction is several times slower; this runs once per process
    # in an upgrade of thousands
    co = getattr(fn, "__code__", None)
    return co is not None and bool(co.co_flags & inspect.CO_COROUTINE)


_MANAGER = "gen_event"

# a handler entry, as sys.get_state shows it: (module, id, state)
_Entry = tuple[str, Any, Any]


def _key(handler: Any) -> tuple[str, Any]:
    if isinstance(handler, str):
        return (handler, None)
    if isinstance(handler, tuple) and len(handler) == 2 and isinstance(handler[0], str):
        return (handler[0], handler[1])
    raise ProcessError(
        f"handler must be a module name or (module, id), got {handler!r}", code="bad_handler"
    )


def _name(module: str, hid: Any) -> Any:
    return module if hid is None else (module, hid)


class _ManagerState(SysState):
    __slots__ = ("parent", "sups")

    def __init__(self, proc: Process, module: str) -> None:
        super().__init__(proc, module)
        self.state: list[_Entry] = []
        self.parent: Pid | None = None
        # handler name -> the process supervising it (add_sup_handler)
        self.sups: dict[tuple[str, Any], Pid] = {}

    def cb(self, module: str) -> Any:
        return self.proc.node.code.current(module)

    def modules(self) -> list[str]:
        return list(dict.fromkeys(m for m, _, _ in self.state))

    def system_code_change(self, module: str, old_vsn: Any, extra: Any) -> Any:
        return self.code_change_with(None, module, old_vsn, self.state, extra)

    def code_change_with(self, cb: Any, module: str, old_vsn: Any, state: Any, extra: Any) -> Any:
        # OTP: code_change of every installed handler of ``module``; the others as they are
        if cb is None and any(m == module for m, _, _ in state):
            cb = self.cb(module)
        out: list[Any] = []
        pending = False
        for m, hid, hs in state:
            if m != module:
                out.append((m, hid, hs))
                continue
            fn = getattr(cb, "code_change", None)
            if fn is None:
                raise ProcessError(f"handler {m} has no code_change/3; use a soft update")
            if _is_async(fn):
                # called by the finisher: one the preflight closes unrun leaves nothing
                out.append((m, hid, _Deferred(fn, (old_vsn, hs, extra))))
                pending = True
                continue
            r = fn(old_vsn, hs, extra)
            if isinstance(r, _CoroutineType):
                pending = True
                out.append((m, hid, r))
            else:
                out.append((m, hid, _handler_cc(r, m)))
        if pending:
            return _finish_code_change(out)
        return out

    def status(self) -> dict[str, Any]:
        return {**super().status(), "handlers": [_name(m, i) for m, i, _ in self.state]}


class _Deferred:
    __slots__ = ("args", "fn")

    def __init__(self, fn: Any, args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args


async def _finish_code_change(out: list[Any]) -> list[_Entry]:
    done: list[_Entry] = []
    for m, hid, r in out:
        if type(r) is _Deferred:
            r = _handler_cc(await r.fn(*r.args), m)
        elif isinstance(r, _CoroutineType):
            r = _handler_cc(await r, m)
        done.append((m, hid, r))
    return done


def _handler_cc(r: Any, module: str) -> Any:
    if isinstance(r, tuple) and len(r) == 2 and r[0] == "ok":
        return r[1]
    raise ProcessError(f"handler {module}.code_change returned {r!r}; expected ('ok', state)")


async def _main(ready: asyncio.Future[Any], parent: Pid | None) -> None:
    proc = current_process()
    assert proc is not None
    mgr = _ManagerState(proc, _MANAGER)
    mgr.parent = parent
    proc.sys = mgr
    proc.behaviour = "gen_event"
    proc.trap_exit = True  # as OTP's managers: the parent's exit runs terminate
    ready.set_result(proc.pid)
    try:
        await _serve(mgr)
    except StopRequest as e:
        await _terminate_all(mgr, "stop")
        raise Exit(e.reason) from None


_NO_EXIT_MSG: Any = object()


async def _serve(mgr: _ManagerState) -> None:
    while True:
        msg = await mgr.next_message()
        mgr.in_callback = True
        if type(msg) is tuple and len(msg) == 2 and msg[0] == "$gen_event":
            await _notify_all(mgr, "handle_event", msg[1])
        elif type(msg) is tuple and len(msg) == 3 and msg[0] == "$gen_call":
            await _handle_call(mgr, msg[1], msg[2])
        elif (
            type(msg) is tuple
            and len(msg) == 3
            and msg[0] == "EXIT"
            and mgr.parent is not None
            and msg[1] == mgr.parent
        ):
            raise StopRequest(msg[2])  # OTP: the parent's exit ends the manager
        else:
            if type(msg) is tuple and len(msg) == 3 and msg[0] == "EXIT" and mgr.sups:
                await _supervisor_exited(mgr, msg[1], msg[2])
            await _notify_all(mgr, "handle_info", msg)


async def _supervisor_exited(mgr: _ManagerState, pid: Any, reason: Any) -> None:
    """OTP: the handlers a process supervised go with it, ``terminate(("stop", reason))``
    (the EXIT still reaches every handler's handle_info afterwards)."""
    for entry in list(mgr.state):
        if mgr.sups.get((entry[0], entry[1])) == pid:
            await _remove(mgr, entry, ("stop", reason), _NO_EXIT_MSG)


async def _handle_call(mgr: _ManagerState, from_: Any, req: Any) -> None:
    try:
        result = await _answer(mgr, req, from_.pid)
    except ProcessError as e:  # a bad handler name sent by hand: the caller's error
        result = ("error", e.message)
    gen_server.reply(from_, result)


async def _answer(mgr: _ManagerState, req: Any, caller: Pid | None) -> Any:
    op = req[0] if type(req) is tuple and req else None
    if op == "$sync_notify":
        await _notify_all(mgr, "handle_event", req[1])
        result: Any = "ok"
    elif op == "$add_handler":
        result = await _add(mgr, _key(req[1]), req[2])
    elif op == "$add_sup_handler":
        result = await _add(mgr, _key(req[1]), req[2], sup=caller)
    elif op == "$delete_handler":
        result = await _delete(mgr, _key(req[1]), req[2])
    elif op == "$swap_handler":
        result = await _swap(mgr, _key(req[1]), req[2], _key(req[3]), req[4])
    elif op == "$swap_sup_handler":
        result = await _swap(mgr, _key(req[1]), req[2], _key(req[3]), req[4], sup=caller)
    elif op == "$call":
        result = await _call_handler(mgr, _key(req[1]), req[2])
    elif op == "$which_handlers":
        result = [_name(m, i) for m, i, _ in mgr.state]
    else:
        result = ("error", ("bad_request", req))
    return result


def _find(mgr: _ManagerState, key: tuple[str, Any]) -> int | None:
    """The first handler named ``key`` (OTP's lookup: duplicates are allowed)."""
    for i, (m, hid, _) in enumerate(mgr.state):
        if m == key[0] and hid == key[1]:
            return i
    return None


def _at(mgr: _ManagerState, entry: _Entry) -> int | None:
    # entries are told apart by identity: the same handler may be installed twice
    for i, e in enumerate(mgr.state):
        if e is entry:
            return i
    return None


async def _init(mgr: _ManagerState, key: tuple[str, Any], args: Any) -> Any:
    """``init(args)`` of a new handler: ``(entry, None)`` or ``(None, what add returns)``."""
    module, hid = key
    try:
        r = await maybe(mgr.cb(module).init(args))
    except Exception as e:
        log.error("gen_event handler %s: init raised %r", module, e)
        return None, ("EXIT", e)
    if isinstance(r, tuple) and len(r) in (2, 3) and r[0] == "ok":
        return (module, hid, r[1]), None
    if isinstance(r, tuple) and len(r) == 2 and r[0] == "error":
        return None, r
    return None, ("error", ("bad_return_value", r))


async def _add(
    mgr: _ManagerState, key: tuple[str, Any], args: Any, *, sup: Pid | None = None
) -> Any:
    """Install a handler, newest first; ``sup``: the process that supervises it (linked)."""
    entry, err = await _init(mgr, key, args)
    if entry is None:
        return err
    mgr.state = [entry, *mgr.state]
    _supervise(mgr, key, sup)
    return "ok"


def _supervise(mgr: _ManagerState, key: tuple[str, Any], sup: Pid | None) -> None:
    if sup is not None:
        mgr.sups[key] = sup
        mgr.proc.node.link(mgr.proc, sup)  # a dead one: its EXIT removes the handler


async def _delete(mgr: _ManagerState, key: tuple[str, Any], args: Any) -> Any:
    i = _find(mgr, key)
    if i is None:
        return ("error", "module_not_found")
    return await _remove(mgr, mgr.state[i], args)


async def _swap(
    mgr: _ManagerState,
    old: tuple[str, Any],
    args1: Any,
    new: tuple[str, Any],
    args2: Any,
    *,
    sup: Pid | None = None,
) -> Any:
    """Terminate ``old`` with ``args1``; ``init((args2, what terminate returned))`` of
    ``new``, installed newest (``"error"`` when ``old`` is not installed, as OTP). The new
    handler is supervised by ``sup`` (swap_sup_handler), else by the old one's."""
    i = _find(mgr, old)
    res: Any = "error"
    old_sup = mgr.sups.get(old)
    new_sup = sup if sup is not None else old_sup
    if i is not None:
        res = await _remove(mgr, mgr.state[i], args1, _NO_EXIT_MSG)
    r = await _add(mgr, new, (args2, res), sup=new_sup)
    if i is not None and old_sup is not None:
        _exit_msg(mgr, old, old_sup, ("swapped", _name(*new), new_sup))
    return r


async def _swap_in_place(
    mgr: _ManagerState, entry: _Entry, args1: Any, new: Any, args2: Any
) -> None:
    """A swap a handler asked for from a callback: the new one takes its place (OTP) and
    its supervisor, if any."""
    old = (entry[0], entry[1])
    sup = mgr.sups.pop(old, None)
    res = await _call_terminate(mgr, entry[0], args1, entry[2])
    try:
        key = _key(new)
    except ProcessError as e:
        new_entry, err = None, ("error", e.message)
    else:
        new_entry, err = await _init(mgr, key, (args2, res))
    i = _at(mgr, entry)
    if i is None:
        return
    if new_entry is None:
        log.error("gen_event: swap to %r failed: %r", new, err)
        mgr.state = mgr.state[:i] + mgr.state[i + 1 :]
        if sup is not None:
            _exit_msg(mgr, old, sup, err)
    else:
        mgr.state = [*mgr.state[:i], new_entry, *mgr.state[i + 1 :]]
        _supervise(mgr, (new_entry[0], new_entry[1]), sup)
        if sup is not None:
            _exit_msg(mgr, old, sup, ("swapped", _name(new_entry[0], new_entry[1]), sup))


async def _call_handler(mgr: _ManagerState, key: tuple[str, Any], request: Any) -> Any:
    i = _find(mgr, key)
    if i is None:
        return ("error", "bad_module")
    entry = mgr.state[i]
    try:
        r = await maybe(mgr.cb(entry[0]).handle_call(request, entry[2]))
    except Exception as e:
        await _crashed(mgr, entry, ("EXIT", e), request)
        return ("error", ("EXIT", e))
    if isinstance(r, tuple) and len(r) in (3, 4) and r[0] == "ok":
        _replace(mgr, entry, r[2])
        return r[1]
    if isinstance(r, tuple) and len(r) == 2 and r[0] == "remove_handler":
        await _remove(mgr, entry, "remove_handler")
        return r[1]
    if isinstance(r, tuple) and len(r) == 6 and r[0] == "swap_handler":
        _, reply_, args1, new_hs, h2, args2 = r
        await _swap_in_place(mgr, _replace(mgr, entry, new_hs), args1, h2, args2)
        return reply_
    await _crashed(mgr, entry, r, request)
    return ("error", r)


async def _notify_all(mgr: _ManagerState, callback: str, event: Any) -> None:
    """Give ``event`` to every handler, newest first; each one's result applies to it."""
    for entry in list(mgr.state):
        if _at(mgr, entry) is None:
            continue  # gone meanwhile
        m, _hid, hs = entry
        try:
            fn = getattr(mgr.cb(m), callback, None)  # a deleted module: the handler crashes
            if fn is None:
                log.warning("gen_event handler %s has no %s; dropped %r", m, callback, event)
                continue
            r = await maybe(fn(event, hs))
        except Exception as e:
            await _crashed(mgr, entry, ("EXIT", e), event)
            continue
        if isinstance(r, tuple) and len(r) in (2, 3) and r[0] == "ok":
            _replace(mgr, entry, r[1])
        elif r == "remove_handler":
            await _remove(mgr, entry, "remove_handler")
        elif isinstance(r, tuple) and len(r) == 5 and r[0] == "swap_handler":
            _, args1, new_hs, h2, args2 = r
            await _swap_in_place(mgr, _replace(mgr, entry, new_hs), args1, h2, args2)
        else:
            await _crashed(mgr, entry, r, event)


def _replace(mgr: _ManagerState, entry: _Entry, hs: Any) -> _Entry:
    new = (entry[0], entry[1], hs)
    i = _at(mgr, entry)
    if i is not None:
        mgr.state = [*mgr.state[:i], new, *mgr.state[i + 1 :]]
    return new


async def _remove(mgr: _ManagerState, entry: _Entry, arg: Any, exit_reason: Any = "normal") -> Any:
    """Take a handler out and run its ``terminate(arg, state)``; its supervisor, if any,
    gets ``("gen_event_EXIT", handler, exit_reason)``."""
    i = _at(mgr, entry)
    if i is not None:
        mgr.state = mgr.state[:i] + mgr.state[i + 1 :]
    key = (entry[0], entry[1])
    sup = mgr.sups.pop(key, None)
    r = await _call_terminate(mgr, entry[0], arg, entry[2])
    if sup is not None and exit_reason is not _NO_EXIT_MSG:
        _exit_msg(mgr, key, sup, exit_reason)
    return r


def _exit_msg(mgr: _ManagerState, key: tuple[str, Any], sup: Pid, reason: Any) -> None:
    mgr.proc.node.send(sup, ("gen_event_EXIT", _name(*key), reason))


async def _crashed(mgr: _ManagerState, entry: _Entry, why: Any, last: Any) -> None:
    """A handler raised or returned garbage: OTP removes it with terminate({error, Why})."""
    log.error(
        "gen_event handler %r crashed in %s; last event %r, state %r, reason %r",
        _name(entry[0], entry[1]),
        mgr.proc.pid,
        last,
        entry[2],
        why,
    )
    await _remove(mgr, entry, ("error", why), why)


async def _call_terminate(mgr: _ManagerState, module: str, arg: Any, hs: Any) -> Any:
    try:
        fn = getattr(mgr.cb(module), "terminate", None)
        if fn is None:
            return "ok"
        return await maybe(fn(arg, hs))
    except Exception as e:
        log.exception("gen_event handler %s: terminate raised", module)
        return ("EXIT", e)


async def _terminate_all(mgr: _ManagerState, arg: Any) -> None:
    mgr.in_callback = True
    for entry in list(mgr.state):
        await _remove(mgr, entry, arg, "shutdown")


# -- client API ----------------------------------------------------------------------


async def start_link(*, name: str | None = None) -> Pid:
    """Start an event manager linked to the caller (with no handlers)."""
    return await _start_process(  # type: ignore[return-value]
        _main, "gen_event", (), name=name, link=True, timeout=None, initial_call="gen_event:init"
    )


async def start(*, name: str | None = None) -> Pid:
    """Start an event manager without a link."""
    return await _start_process(  # type: ignore[return-value]
        _main, "gen_event", (), name=name, link=False, timeout=None, initial_call="gen_event:init"
    )


async def add_handler(manager: Pid | str, handler: Any, args: Any = None) -> Any:
    """Install ``handler`` (module or ``(module, id)``) with ``init(args)``.

    Returns ``"ok"``, ``("error", reason)`` from init, or ``("EXIT", exception)`` if init
    raised (OTP's return values)."""
    _key(handler)
    return await gen_server.call(manager, ("$add_handler", handler, args), timeout=None)


async def add_sup_handler(manager: Pid | str, handler: Any, args: Any = None) -> Any:
    """``add_handler``, supervised by the calling process (OTP's ``add_sup_handler``): the
    manager links to it; if it exits, the handler is removed with ``terminate(("stop",
    reason), state)``; if the handler is removed, the caller gets
    ``("gen_event_EXIT", handler, reason)``: ``"normal"``, ``"shutdown"``, ``("swapped",
    new_handler, supervisor)``, or what it crashed with. Must be called in a process."""
    _key(handler)
    if current_process() is None:
        raise ProcessError("add_sup_handler must be called in a process (it supervises)")
    return await gen_server.call(manager, ("$add_sup_handler", handler, args), timeout=None)


async def delete_handler(manager: Pid | str, handler: Any, args: Any = None) -> Any:
    """Remove ``handler``: returns what its ``terminate(args, state)`` returned, or
    ``("error", "module_not_found")``."""
    _key(handler)
    return await gen_server.call(manager, ("$delete_handler", handler, args), timeout=None)


async def swap_handler(manager: Pid | str, old: tuple[Any, Any], new: tuple[Any, Any]) -> Any:
    """Replace ``old = (handler1, args1)`` by ``new = (handler2, args2)``: handler1's
    ``terminate(args1, state)`` result goes to handler2's ``init((args2, result))``."""
    (h1, a1), (h2, a2) = old, new
    _key(h1)
    _key(h2)
    return await gen_server.call(manager, ("$swap_handler", h1, a1, h2, a2), timeout=None)


async def swap_sup_handler(manager: Pid | str, old: tuple[Any, Any], new: tuple[Any, Any]) -> Any:
    """``swap_handler``, with the new handler supervised by the calling process."""
    (h1, a1), (h2, a2) = old, new
    _key(h1)
    _key(h2)
    if current_process() is None:
        raise ProcessError("swap_sup_handler must be called in a process (it supervises)")
    return await gen_server.call(manager, ("$swap_sup_handler", h1, a1, h2, a2), timeout=None)


def notify(manager: Pid | str, event: Any) -> None:
    """Send ``event`` to every handler's ``handle_event``; returns at once, never fails."""
    target = current_node().resolve(manager)
    if target is not None:
        target.deliver(("$gen_event", event))


async def sync_notify(manager: Pid | str, event: Any, timeout: float | None = None) -> None:
    """Like ``notify``, but returns once every handler has handled ``event``."""
    await gen_server.call(manager, ("$sync_notify", event), timeout=timeout)


async def call(manager: Pid | str, handler: Any, request: Any, timeout: float | None = 5.0) -> Any:
    """``handle_call(request, state)`` of one handler; its reply, or
    ``("error", "bad_module")`` if it is not installed, ``("error", ("EXIT", e))`` if it
    raised (the handler is then removed)."""
    _key(handler)
    return await gen_server.call(manager, ("$call", handler, request), timeout=timeout)


async def which_handlers(manager: Pid | str) -> list[Any]:
    """The installed handlers, newest first."""
    r: list[Any] = await gen_server.call(manager, ("$which_handlers",), timeout=None)
    return r


async def stop(manager: Pid | str, reason: Any = "normal", timeout: float | None = 5.0) -> None:
    """Stop a manager: every handler's ``terminate("stop", state)`` runs, then it exits."""
    await _stop_process(manager, reason, timeout, _ManagerState, "gen_event")
