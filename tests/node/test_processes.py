"""Links, monitors, trap_exit, kill vs killed, normal exits, the registry (issue 3, item 7)."""

from __future__ import annotations

import asyncio

import pytest

from relhandler.runtime import (
    Exit,
    Node,
    Pid,
    ReceiveTimeout,
    exit,
    link,
    monitor,
    receive,
    register,
    self_pid,
    spawn,
    spawn_link,
    trap_exit,
    whereis,
)

from .conftest import until


async def _sleeper() -> None:
    await receive()


async def test_pid_format_and_parse() -> None:
    async with Node() as node:
        pid = node.spawn(_sleeper)
        assert str(pid).startswith("<0.") and Pid.parse(str(pid)) == pid


async def test_normal_exit_does_not_kill_links_other_reasons_do() -> None:
    async with Node() as node:
        events: list[object] = []

        async def child(reason: object) -> None:
            raise Exit(reason)

        async def parent(reason: object) -> None:
            spawn_link(child, reason)
            try:
                await receive(timeout=0.05)
            except ReceiveTimeout:
                events.append(("survived", reason))

        node.spawn(parent, "normal")
        p2 = node.spawn(parent, "boom")
        p2_proc = node.processes[p2]
        p2_proc.add_watcher(lambda r: events.append(("died", r)))
        await until(lambda: len(events) == 2)
        assert sorted(map(str, events)) == sorted(
            map(str, [("survived", "normal"), ("died", "boom")])
        )


async def test_trap_exit_kill_vs_killed_and_monitors() -> None:
    async with Node() as node:
        got: list[object] = []

        async def trapper() -> None:
            trap_exit(True)
            victim = spawn_link(_sleeper)
            ref = monitor(victim)
            exit(victim, "kill")
            got.append(await receive(match=lambda m: m[0] == "EXIT"))
            got.append(await receive(match=lambda m: m[0] == "DOWN"))
            got.append((victim, ref))
            # a trapped non-kill signal becomes a message, the trapper lives on
            exit(self_pid(), "please_stop")
            got.append(await receive())
            await receive()  # stay alive

        t = node.spawn(trapper)
        await until(lambda: len(got) == 4)
        victim, ref = got[2]  # type: ignore[misc]
        assert got[0] == ("EXIT", victim, "killed")
        assert got[1] == ("DOWN", ref, "process", victim, "killed")
        assert got[3][0] == "EXIT" and got[3][2] == "please_stop"  # type: ignore[index]
        assert t in node.processes

        async def plain_target() -> None:
            trap_exit(True)
            await receive(match=lambda m: False)

        target = node.spawn(plain_target)
        res: list[object] = []
        node.processes[target].add_watcher(res.append)

        async def killer() -> None:
            exit(target, "kill")  # kill cannot be trapped

        node.spawn(killer)
        await until(lambda: res == ["killed"])


async def test_monitor_dead_process_gets_noproc_and_registry_freed_on_exit() -> None:
    async with Node() as node:
        seen: list[object] = []

        async def named() -> None:
            register("worker")
            await receive()

        w = node.spawn(named)
        await until(lambda: node.whereis("worker") == w)

        async def watcher() -> None:
            ref = monitor(w)
            node.send(w, "go")
            seen.append(await receive())
            ref2 = monitor(w)
            seen.append(await receive())
            seen.append((ref, ref2, whereis("worker")))

        node.spawn(watcher)
        await until(lambda: len(seen) == 3)
        ref, ref2, name = seen[2]  # type: ignore[misc]
        assert seen[0] == ("DOWN", ref, "process", w, "normal")
        assert seen[1] == ("DOWN", ref2, "process", w, "noproc")
        assert name is None


async def test_selective_receive_keeps_order_of_unmatched() -> None:
    async with Node() as node:
        out: list[object] = []

        async def proc() -> None:
            out.append(await receive(match=lambda m: m == "b"))
            out.append(await receive())
            out.append(await receive())
            with pytest.raises(ReceiveTimeout):
                await receive(timeout=0)
            out.append("timeout")

        pid = node.spawn(proc)
        for m in ("a", "b", "c"):
            node.send(pid, m)
        await until(lambda: len(out) == 4)
        assert out == ["b", "a", "c", "timeout"]


async def test_link_to_dead_process_and_spawn_from_outside() -> None:
    async with Node() as node:
        dead = node.spawn(_sleeper)
        node.send(dead, "x")
        await until(lambda: dead not in node.processes)
        died: list[object] = []

        async def linker() -> None:
            link(dead)
            await asyncio.sleep(1)

        p = node.spawn(linker)
        node.processes[p].add_watcher(died.append)
        await until(lambda: died == ["noproc"])
        node.send(dead, "dropped silently")
        assert spawn  # module-level spawn needs a node context; node.spawn works outside
