"""What the behaviours share: starting a behaviour process and stopping it, the stop
request, awaiting a callback's result."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Coroutine
from typing import Any

from relhandler.errors import CallTimeoutError, ProcessError
from relhandler.runtime._kernel import Pid, Process, current_node, current_process, fail_future

__all__ = ["StopRequest", "maybe", "module_name", "start", "stop"]

_CoroutineType = types.CoroutineType


class StopRequest(BaseException):
    """Raised inside a behaviour's loop by ``stop()``'s system request."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def module_name(module: str | types.ModuleType) -> str:
    return module if isinstance(module, str) else module.__name__


async def maybe(r: Any) -> Any:
    """Await ``r`` if a callback returned a coroutine (an ``async def`` callback)."""
    if isinstance(r, _CoroutineType) or asyncio.isfuture(r):
        return await r
    return r


async def start(
    main: Callable[..., Coroutine[Any, Any, None]],
    label: str,
    args: tuple[Any, ...],
    *,
    name: str | None,
    link: bool,
    timeout: float | None,
    initial_call: str,
) -> Pid | None:
    """Spawn ``main(*args, ready, parent)`` and wait until it resolves ``ready``.

    ``ready`` gets the pid (started), ``"ignore"`` (returns None) or an exception (raised).
    A start that takes longer than ``timeout`` seconds kills the process after unlinking
    it, so the caller, who gets the error, is not taken down with it (OTP's start_link
    timeout does the same)."""
    node = current_node()
    me = current_process()
    parent = me.pid if (link and me is not None) else None
    ready: asyncio.Future[Any] = node.loop.create_future()

    if name is not None and name in node.names:
        raise ProcessError(
            f"cannot start {label}: name {name!r} is already registered to {node.names[name]}",
            code="already_started",
        )

    def setup(p: Process) -> None:
        if name is not None:
            node.names[name] = p.pid
            p.name = name

    pid = node.spawn(
        main, *args, ready, parent, link=parent, initial_call=initial_call, setup=setup
    )
    p = node.processes[pid]
    watch = p.add_watcher(
        lambda reason: fail_future(ready, ProcessError(f"{label}.init exited: {reason!r}"))
    )
    try:
        r = await asyncio.wait_for(asyncio.shield(ready), timeout)
    except TimeoutError as e:
        # OTP's proc_lib:sync_start_link: unlink first, then kill, then drop an EXIT that
        # already arrived, so a caller that catches the error does not die of the link
        if parent is not None and me is not None:
            me.links.discard(pid)
            p.links.discard(me.pid)
            if hasattr(p.sys, "parent"):
                p.sys.parent = None
            _flush_exit(me, pid)
        node._kill(p, "kill")
        raise ProcessError(f"{label}.init did not return within {timeout}s") from e
    finally:
        p.remove_watcher(watch)
    if r == "ignore":
        return None
    return pid


def _flush_exit(me: Process, pid: Pid) -> None:
    box = me.mailbox
    for m in [m for m in box if type(m) is tuple and len(m) == 3 and m[0] == "EXIT"]:
        if m[1] == pid:
            box.remove(m)


async def stop(
    server: Pid | str, reason: Any, timeout: float | None, kind: type, what: str
) -> None:
    """Queue a stop request (the loop runs terminate and exits) and wait for the exit."""
    node = current_node()
    p = node.process(server)
    task = p.task
    s = p.sys

    def _do_stop(state: Any) -> Any:
        raise StopRequest(reason)

    if isinstance(s, kind):
        s.request("replace_state", _do_stop)  # type: ignore[attr-defined]
    else:
        raise ProcessError(f"{p.pid} is not a {what} process")
    if task is not None:
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            raise CallTimeoutError(
                f"stop of {p.pid} did not finish within {timeout}s (busy in a callback?)"
            )
