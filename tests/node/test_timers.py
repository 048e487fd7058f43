"""Timers (runtime/timers.py): OTP's send_after / start_timer / cancel_timer, in seconds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relhandler.runtime import Exit, Node, Pid, receive, register, self_pid, send, timers

from .conftest import until


def collector(box: list[Any]) -> Any:
    async def run() -> None:
        while True:
            m = await receive()
            if m == "quit":
                raise Exit("normal")
            box.append(m)

    return run


async def test_send_after_delivers_in_order_with_other_messages() -> None:
    got: list[Any] = []
    async with Node() as node:
        pid = node.spawn(collector(got))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ref = timers.send_after(0.03, pid, "late")
        timers.send_after(0, pid, "soon")
        send(pid, "now")
        await until(lambda: len(got) == 3)
        assert got == ["now", "soon", "late"]
        assert loop.time() - t0 >= 0.03
        assert timers.read_timer(ref) is False and timers.cancel_timer(ref) is False


async def test_start_timer_message_carries_its_ref() -> None:
    got: list[Any] = []
    async with Node() as node:
        pid = node.spawn(collector(got))
        ref = timers.start_timer(0.001, pid, {"k": 1})
        await until(lambda: bool(got))
        assert got == [("timeout", ref, {"k": 1})]


async def test_cancel_returns_time_left_and_nothing_arrives() -> None:
    got: list[Any] = []
    async with Node() as node:
        pid = node.spawn(collector(got))
        ref = timers.send_after(0.5, pid, "never")
        left = timers.read_timer(ref)
        assert left is not False and 0.4 < left <= 0.5
        r = timers.cancel_timer(ref)
        assert r is not False and 0.4 < r <= 0.5
        assert timers.cancel_timer(ref) is False  # cancelled already
        marker = timers.send_after(0.02, pid, "marker")
        await until(lambda: got == ["marker"])
        assert timers.cancel_timer(marker) is False  # fired already


async def test_timer_to_a_dead_or_dying_pid_vanishes() -> None:
    got: list[Any] = []
    async with Node() as node:
        dead = node.spawn(collector(got))
        send(dead, "quit")
        await until(lambda: dead not in node.processes)
        ref = timers.send_after(0.01, dead, "x")
        assert timers.read_timer(ref) is False and timers.cancel_timer(ref) is False
        dying = node.spawn(collector(got))
        ref2 = timers.send_after(10, dying, "y")
        assert timers.read_timer(ref2) is not False
        send(dying, "quit")
        await until(lambda: dying not in node.processes)
        assert timers.read_timer(ref2) is False  # cancelled with its process
        assert got == []


async def test_a_registered_name_is_looked_up_when_the_timer_fires() -> None:
    got: list[Any] = []
    async with Node() as node:

        async def late_registrant() -> None:
            register("svc", self_pid())
            await collector(got)()

        timers.send_after(0.02, "svc", "hello")
        timers.send_after(0.0, "nobody", "dropped")  # no such name: dropped, no error
        node.spawn(late_registrant)
        await until(lambda: got == ["hello"])


@pytest.mark.parametrize("bad", [-1, -0.5, "1", None, True])
async def test_bad_times_are_refused(bad: Any) -> None:
    async with Node() as node:
        pid = node.spawn(collector([]))
        with pytest.raises(ValueError, match="seconds >= 0"):
            timers.send_after(bad, pid, "x")
        assert isinstance(pid, Pid)
