"""Timers: ``send_after``, ``start_timer``, ``cancel_timer``, ``read_timer`` (OTP's BIFs).

Times are seconds (int or float), as everywhere in the Python API. A timer is one
``loop.call_later`` handle; it delivers its message into the destination's mailbox, in
order with every other message, so a suspended process finds it queued when it resumes.
A timer to a pid dies with the pid (OTP: "the timer is automatically canceled if the
process referred to by the pid is not alive, or if the process exits"); a timer to a
registered name looks the name up when it fires and drops the message if nobody has it.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Literal

from relhandler.runtime._kernel import Node, Pid, Process, Ref, current_node

__all__ = ["cancel_timer", "read_timer", "send_after", "start_timer"]


class _Timer:
    __slots__ = ("handle", "proc", "watch")

    def __init__(self, handle: asyncio.TimerHandle, proc: Process | None) -> None:
        self.handle = handle
        self.proc = proc
        self.watch = 0


# per node (refs are unique across nodes, but a closed node's table must not outlive it)
_tables: weakref.WeakKeyDictionary[Node, dict[Ref, _Timer]] = weakref.WeakKeyDictionary()


def _table(node: Node) -> dict[Ref, _Timer]:
    t = _tables.get(node)
    if t is None:
        t = _tables[node] = {}
    return t


def _check_time(time: float) -> float:
    if isinstance(time, bool) or not isinstance(time, int | float) or time < 0:
        raise ValueError(f"timer time must be seconds >= 0 (int or float), got {time!r}")
    return float(time)


def _schedule(time: float, dest: Pid | str, msg: Any, ref: Ref) -> Ref:
    node = current_node()
    delay = _check_time(time)
    proc: Process | None = None
    if isinstance(dest, Pid):
        proc = node.processes.get(dest)
        if proc is None or not proc.alive:
            return ref  # a timer to a dead pid is cancelled at once: nothing is ever sent
    elif not isinstance(dest, str):
        raise ValueError(f"timer destination must be a Pid or a registered name, got {dest!r}")
    table = _table(node)

    def fire() -> None:
        tm = table.pop(ref, None)
        if tm is None:
            return
        if proc is not None:
            proc.remove_watcher(tm.watch)
            proc.deliver(msg)
        else:
            target = node.resolve(dest)
            if target is not None:
                target.deliver(msg)

    tm = _Timer(node.loop.call_later(delay, fire), proc)
    table[ref] = tm
    if proc is not None:
        tm.watch = proc.add_watcher(lambda _reason: _drop(table, ref))
    return ref


def _drop(table: dict[Ref, _Timer], ref: Ref) -> None:
    tm = table.pop(ref, None)
    if tm is not None:
        tm.handle.cancel()


def send_after(time: float, dest: Pid | str, msg: Any) -> Ref:
    """Send ``msg`` to ``dest`` after ``time`` seconds; returns the timer's reference.

    Raises ``ValueError`` for a negative or non-numeric time (OTP's ``badarg``)."""
    return _schedule(time, dest, msg, Ref.make())


def start_timer(time: float, dest: Pid | str, msg: Any) -> Ref:
    """Send ``("timeout", ref, msg)`` to ``dest`` after ``time`` seconds; returns ``ref``."""
    ref = Ref.make()
    return _schedule(time, dest, ("timeout", ref, msg), ref)


def read_timer(ref: Ref) -> float | Literal[False]:
    """Seconds left before the timer fires, or False if it fired or was cancelled."""
    node = current_node()
    tm = _table(node).get(ref)
    if tm is None:
        return False
    return max(0.0, tm.handle.when() - node.loop.time())


def cancel_timer(ref: Ref) -> float | Literal[False]:
    """Cancel a timer: the seconds it had left, or False if it already fired (its message
    may be in the mailbox then), was cancelled, or never existed."""
    node = current_node()
    tm = _table(node).pop(ref, None)
    if tm is None:
        return False
    tm.handle.cancel()
    if tm.proc is not None:
        tm.proc.remove_watcher(tm.watch)
    return max(0.0, tm.handle.when() - node.loop.time())
