"""gen_event (runtime/gen_event.py): managers, handlers added/deleted/swapped, code change.

Expected results marked "OTP 25" were recorded from the same calls against an Erlang
gen_event on OTP 25.2 (erts 13.1.5).
"""

from __future__ import annotations

from typing import Any

import pytest

from relhandler.runtime import Exit, Node, Pid, gen_event, send, sys

from .conftest import CodeDir, until

H = """
__vsn__ = "1"
LOG = []

def init(a):
    if a == "bad":
        return ("error", "nope")
    if a == "crash":
        raise RuntimeError("boom")
    return ("ok", a)

def handle_event(e, s):
    if e == "badret":
        return "weird"
    if e == "crash":
        raise RuntimeError("kaboom")
    if e == "rm":
        return "remove_handler"
    if e == "swap" and LOG_TARGET:
        return ("swap_handler", "bye", s, LOG_TARGET[0], "hi")
    LOG.append(("event", s, e))
    return ("ok", s)

LOG_TARGET = []

def handle_call(q, s):
    if q == "get":
        return ("ok", s, s)
    if q == "rm":
        return ("remove_handler", "removed")
    return ("ok", "?", s)

def handle_info(i, s):
    LOG.append(("info", s, i))
    return ("ok", s)

def terminate(a, s):
    LOG.append(("terminate", a, s))
    return ("terminated", s)

def code_change(old, s, extra):
    return ("ok", s)
"""


def log_of(node: Node, mod: str) -> list[Any]:
    out: list[Any] = node.code.current(mod).LOG
    return out


def quiet(node: Node, pid: Pid) -> bool:
    p = node.processes.get(pid)
    return p is not None and p._waiter is not None and not p.mailbox


async def test_handlers_in_otp_order_crashes_remove_only_the_handler(code_dir: CodeDir) -> None:
    h = code_dir.name("h")
    code_dir.write("h", H)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = await gen_event.start(name="mgr")
        assert await gen_event.add_handler(m, (h, 1), "one") == "ok"
        assert await gen_event.add_handler(m, (h, 2), "two") == "ok"
        assert await gen_event.add_handler(m, h, "plain") == "ok"
        assert await gen_event.add_handler("mgr", h, "plain2") == "ok"  # OTP 25: a duplicate
        assert await gen_event.add_handler(m, (h, 3), "bad") == ("error", "nope")
        r = await gen_event.add_handler(m, (h, 4), "crash")
        assert r[0] == "EXIT" and isinstance(r[1], RuntimeError)
        assert await gen_event.which_handlers(m) == [h, h, (h, 2), (h, 1)]
        assert await sys.get_state(m) == [  # OTP 25, with None for OTP's false
            (h, None, "plain2"),
            (h, None, "plain"),
            (h, 2, "two"),
            (h, 1, "one"),
        ]
        await gen_event.sync_notify(m, "hello")
        send(m, "inf")
        await until(lambda: quiet(node, m))
        await gen_event.sync_notify(m, "badret")
        assert log_of(node, h) == [
            ("event", "plain2", "hello"),
            ("event", "plain", "hello"),
            ("event", "two", "hello"),
            ("event", "one", "hello"),
            ("info", "plain2", "inf"),
            ("info", "plain", "inf"),
            ("info", "two", "inf"),
            ("info", "one", "inf"),
            ("terminate", ("error", "weird"), "plain2"),
            ("terminate", ("error", "weird"), "plain"),
            ("terminate", ("error", "weird"), "two"),
            ("terminate", ("error", "weird"), "one"),
        ]
        assert await gen_event.which_handlers(m) == []
        assert m in node.processes  # the manager itself goes on
        assert await gen_event.delete_handler(m, "nothere", "x") == ("error", "module_not_found")
        assert await gen_event.call(m, "nothere", "q") == ("error", "bad_module")


async def test_add_delete_swap_and_call(code_dir: CodeDir) -> None:
    h = code_dir.name("h")
    g = code_dir.name("g")
    code_dir.write("h", H)
    code_dir.write("g", H.replace('__vsn__ = "1"', '__vsn__ = "g1"'))
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = await gen_event.start()
        await gen_event.add_handler(m, h, "s1")
        assert await gen_event.call(m, h, "get") == "s1"
        # swap: terminate's result reaches the new handler's init
        assert await gen_event.swap_handler(m, (h, "a1"), (g, "a2")) == "ok"
        assert await sys.get_state(m) == [(g, None, ("a2", ("terminated", "s1")))]
        assert log_of(node, h)[-1] == ("terminate", "a1", "s1")
        # swapping out a handler that is not there: init gets "error" (OTP 25)
        assert await gen_event.swap_handler(m, ("nothere", None), ((h, 7), "x")) == "ok"
        assert await sys.get_state(m) == [
            (h, 7, ("x", "error")),
            (g, None, ("a2", ("terminated", "s1"))),
        ]
        # a handler swaps itself from handle_event: the new one takes its place (OTP 25)
        node.code.current(g).LOG_TARGET.append((h, 8))
        gen_event.notify(m, "swap")
        await gen_event.sync_notify(m, "after")
        state = await sys.get_state(m)
        assert [(mod, i) for mod, i, _ in state] == [(h, 7), (h, 8)]
        assert state[1][2] == ("hi", ("terminated", ("a2", ("terminated", "s1"))))
        assert await gen_event.call(m, (h, 8), "rm") == "removed"
        assert await gen_event.delete_handler(m, (h, 7), "done") == ("terminated", ("x", "error"))
        assert await gen_event.which_handlers(m) == []


async def test_stop_and_parent_exit_terminate_every_handler_with_stop(code_dir: CodeDir) -> None:
    h = code_dir.name("h")
    code_dir.write("h", H)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = await gen_event.start()
        await gen_event.add_handler(m, (h, 9), "nine")
        await gen_event.stop(m)
        assert m not in node.processes
        started: list[Pid] = []

        async def parent() -> None:
            started.append(await gen_event.start_link())
            await gen_event.add_handler(started[0], (h, 10), "ten")
            raise Exit("shutdown")

        node.spawn(parent)
        await until(lambda: bool(started) and started[0] not in node.processes)
        assert log_of(node, h) == [("terminate", "stop", "nine"), ("terminate", "stop", "ten")]
        assert node.processes.get(started[0]) is None


async def test_other_exits_reach_handle_info(code_dir: CodeDir) -> None:
    h = code_dir.name("h")
    code_dir.write("h", H)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = await gen_event.start()
        await gen_event.add_handler(m, h, "s")

        async def linked() -> None:
            from relhandler.runtime import link

            link(m)
            raise Exit("bye")

        other = node.spawn(linked)
        await until(lambda: bool(log_of(node, h)))
        assert log_of(node, h) == [("info", "s", ("EXIT", other, "bye"))]
        assert m in node.processes


H2 = H.replace('__vsn__ = "1"', '__vsn__ = "2"').replace(
    'def code_change(old, s, extra):\n    return ("ok", s)',
    "def code_change(old, s, extra):\n"
    '    if extra == "boom":\n'
    '        raise ValueError("deliberate")\n'
    '    return ("ok", {"v2": s, "old": old, "extra": extra})',
)


async def test_update_of_a_handler_module_migrates_only_its_handlers(code_dir: CodeDir) -> None:
    h = code_dir.name("h")
    other = code_dir.name("o")
    code_dir.write("h", H)
    code_dir.write("o", H)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = await gen_event.start()
        await gen_event.add_handler(m, (h, 1), "one")
        await gen_event.add_handler(m, other, "keep")
        await gen_event.add_handler(m, (h, 2), "two")
        assert await sys.get_modules(m) == [h, other]  # what a "dynamic" child answers
        assert (await sys.suspend_many([m])).suspended == (m,)
        gen_event.notify(m, "queued")  # waits for the resume, then reaches v2
        code_dir.write("h", H2)
        node.code.load(h)
        errs = await sys.change_code_many([m], h, "1", "boom")
        assert [type(e) for _, e in errs] == [ValueError]
        assert [s for _, _, s in await sys.get_state(m)] == ["two", "keep", "one"]
        assert await sys.change_code_many([m], h, "1", "x") == []
        assert await sys.get_state(m) == [
            (h, 2, {"v2": "two", "old": "1", "extra": "x"}),
            (other, None, "keep"),
            (h, 1, {"v2": "one", "old": "1", "extra": "x"}),
        ]
        sys.resume_many([m])
        await gen_event.sync_notify(m, "after")
        assert log_of(node, other) == [("event", "keep", "queued"), ("event", "keep", "after")]
        assert [e[2] for e in log_of(node, h)] == ["queued", "queued", "after", "after"]


@pytest.mark.parametrize("bad", [42, ("a",), ("a", 1, 2)])
async def test_a_bad_handler_name_is_refused(bad: Any) -> None:
    async with Node():
        m = await gen_event.start()
        with pytest.raises(Exception, match="module name or"):
            await gen_event.add_handler(m, bad, None)


async def test_a_deleted_handler_module_or_a_bad_swap_removes_only_that_handler(
    code_dir: CodeDir,
) -> None:
    h = code_dir.name("h")
    gone = code_dir.name("gone")
    code_dir.write("h", H)
    code_dir.write("gone", H)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = await gen_event.start()
        await gen_event.add_handler(m, gone, "g")
        await gen_event.add_handler(m, h, "keep")
        node.code.current(h).LOG_TARGET.append(42)  # swap_handler to a bad name
        node.code.purge(gone)
        node.code.delete(gone)
        (code_dir.root / f"{gone}.py").unlink()
        await gen_event.sync_notify(m, "x")  # the handler of the deleted module crashes
        assert await gen_event.which_handlers(m) == [h]
        await gen_event.sync_notify(m, "swap")  # h swaps to 42: removed, manager lives on
        assert await gen_event.which_handlers(m) == []
        assert m in node.processes
        r = await gen_event.add_handler(m, h, "back")
        assert r == "ok"


async def test_supervised_handler_goes_with_its_supervisor_and_reports_its_end(
    code_dir: CodeDir,
) -> None:
    from relhandler.runtime import receive, self_pid

    h = code_dir.name("h")
    code_dir.write("h", H)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = await gen_event.start()
        got: list[Any] = []

        async def owner() -> None:
            assert await gen_event.add_sup_handler(m, (h, 1), "one") == "ok"
            assert await gen_event.add_sup_handler(m, (h, 2), "two") == "ok"
            assert self_pid() in node.processes[m].links  # the manager linked to us
            await gen_event.delete_handler(m, (h, 1), "bye")
            got.append(await receive())
            await receive(match=lambda x: x == "die")
            raise Exit("gone")

        o = node.spawn(owner)
        await until(lambda: bool(got))
        assert got == [("gen_event_EXIT", (h, 1), "normal")]
        send(o, "die")
        await until(lambda: o not in node.processes and not node.processes[m].sys.state)
        assert log_of(node, h)[-1] == ("terminate", ("stop", "gone"), "two")
        with pytest.raises(Exception, match="in a process"):
            await gen_event.add_sup_handler(m, h, "x")  # the test itself is no process
