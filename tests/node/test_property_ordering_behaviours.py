"""Property: for gen_statem and gen_event too, interleaving casts, calls, notifies,
suspends, resumes and code changes never loses, duplicates or reorders an event."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relhandler.runtime import Node, gen_event, gen_statem, sys

from .conftest import CodeDir

MACHINE = """
__vsn__ = "{v}"

def callback_mode():
    return ["handle_event_function", "state_enter"]

def init(args):
    return ("ok", "x", {{"seen": [], "gen": 0, "enters": 0}})

def handle_event(etype, content, state, data):
    if etype == "enter":
        return ("keep_state", {{**data, "enters": data["enters"] + 1}})
    nxt = "y" if state == "x" else "x"  # every event changes the state
    data = {{**data, "seen": data["seen"] + [content]}}
    if etype == "cast":
        return ("next_state", nxt, data)
    return ("next_state", nxt, data, [("reply", etype[1], len(data["seen"]))])

def code_change(old_vsn, state, data, extra):
    return ("ok", state, {{**data, "gen": data["gen"] + 1}})
"""

HANDLER = """
__vsn__ = "{v}"

def init(args):
    return ("ok", {{"seen": [], "gen": 0}})

def handle_event(e, s):
    return ("ok", {{**s, "seen": s["seen"] + [e]}})

def code_change(old_vsn, s, extra):
    return ("ok", {{**s, "gen": s["gen"] + 1}})
"""

OPS = st.lists(
    st.sampled_from(["send", "sync", "suspend", "resume", "load_change", "yield"]),
    min_size=1,
    max_size=40,
)


class TestEventOrder:
    """Every event is handled exactly once, in the order it was sent."""

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops=OPS)
    def test_gen_statem(self, ops: list[str], tmp_path_factory: Any) -> None:
        asyncio.run(self._statem(ops, CodeDir(tmp_path_factory.mktemp("prop"))))

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops=OPS)
    def test_gen_event(self, ops: list[str], tmp_path_factory: Any) -> None:
        asyncio.run(self._event(ops, CodeDir(tmp_path_factory.mktemp("prop"))))

    async def _statem(self, ops: list[str], code_dir: CodeDir) -> None:
        me = code_dir.name("sm")
        code_dir.write("sm", MACHINE.format(v=0))
        async with Node() as node:
            node.code.set_path([code_dir.root])
            pid = await gen_statem.start(me)
            sent: list[int] = []
            pending: list[asyncio.Future[Any]] = []
            version = await self._drive(
                node,
                code_dir,
                me,
                pid,
                ops,
                sent,
                send=lambda n: gen_statem.cast(pid, n),
                sync=lambda n: pending.append(
                    asyncio.ensure_future(gen_statem.call(pid, n, timeout=None))
                ),
                source=MACHINE,
            )
            await asyncio.gather(*pending)
            state, data = await sys.get_state(pid)
            assert data["seen"] == sent
            assert data["gen"] == version
            assert data["enters"] == len(sent) + 1  # the initial state and every change
            assert state == ("x" if len(sent) % 2 == 0 else "y")

    async def _event(self, ops: list[str], code_dir: CodeDir) -> None:
        h = code_dir.name("h")
        code_dir.write("h", HANDLER.format(v=0))
        async with Node() as node:
            node.code.set_path([code_dir.root])
            m = await gen_event.start()
            await gen_event.add_handler(m, h)
            sent: list[int] = []
            pending: list[asyncio.Future[Any]] = []
            version = await self._drive(
                node,
                code_dir,
                h,
                m,
                ops,
                sent,
                send=lambda n: gen_event.notify(m, n),
                sync=lambda n: pending.append(asyncio.ensure_future(gen_event.sync_notify(m, n))),
                source=HANDLER,
            )
            await asyncio.gather(*pending)
            [(_, _, state)] = await sys.get_state(m)
            assert state["seen"] == sent
            assert state["gen"] == version

    async def _drive(
        self,
        node: Node,
        code_dir: CodeDir,
        mod: str,
        pid: Any,
        ops: list[str],
        sent: list[int],
        *,
        send: Any,
        sync: Any,
        source: str,
    ) -> int:
        suspended = False
        version = 0
        base = mod.removeprefix(code_dir.prefix)
        for n, op in enumerate(ops):
            if op == "send":
                send(n)
                sent.append(n)
            elif op == "sync":
                sync(n)
                await asyncio.sleep(0)  # the call task delivers its request now
                sent.append(n)
            elif op == "suspend":
                await sys.suspend_many([pid])
                suspended = True
            elif op == "resume":
                sys.resume_many([pid])
                suspended = False
            elif op == "load_change" and suspended:
                version += 1
                code_dir.write(base, source.format(v=version))
                node.code.load_prepared(node.code.prepare(mod))
                assert await sys.change_code_many([pid], mod, str(version - 1), None) == []
            else:
                await asyncio.sleep(0)
        sys.resume_many([pid])
        return version
