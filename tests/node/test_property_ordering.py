"""Property: interleaving casts, calls, suspends, resumes and code changes never loses,
duplicates or reorders a process's ordinary messages (issue: runtime, item 8)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relhandler.runtime import Node, gen_server, sys

from .conftest import CodeDir

SERVER = """
__vsn__ = "{v}"

def init(args):
    return ("ok", {{"seen": [], "gen": 0}})

def handle_call(req, from_, state):
    state = {{**state, "seen": state["seen"] + [req]}}
    return ("reply", len(state["seen"]), state)

def handle_cast(msg, state):
    return ("noreply", {{**state, "seen": state["seen"] + [msg]}})

def code_change(old_vsn, state, extra):
    return ("ok", {{**state, "gen": state["gen"] + 1}})
"""

OPS = st.lists(
    st.sampled_from(["cast", "call", "suspend", "resume", "load_change", "yield"]),
    min_size=1,
    max_size=40,
)


class TestMessageOrder:
    """Every ordinary message is handled exactly once, in the order it was sent."""

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops=OPS, inline=st.booleans())
    def test_interleavings(self, ops: list[str], inline: bool, tmp_path_factory: Any) -> None:
        # inline: idle servers answer calls on the caller's turn (the default); else queued
        asyncio.run(self._run(ops, inline, CodeDir(tmp_path_factory.mktemp("prop"))))

    async def _run(self, ops: list[str], inline: bool, code_dir: CodeDir) -> None:
        me = code_dir.name("srv")
        code_dir.write("srv", SERVER.format(v=0))
        async with Node() as node:
            node.inline_calls = inline
            node.code.set_path([code_dir.root])
            pid = await gen_server.start(me)
            sent: list[int] = []
            pending: list[asyncio.Future[Any]] = []
            suspended = False
            version = 0
            for n, op in enumerate(ops):
                if op == "cast":
                    gen_server.cast(pid, n)
                    sent.append(n)
                elif op == "call":
                    pending.append(asyncio.ensure_future(gen_server.call(pid, n, timeout=None)))
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
                    code_dir.write("srv", SERVER.format(v=version))
                    node.code.load_prepared(node.code.prepare(me))
                    assert await sys.change_code_many([pid], me, str(version - 1), None) == []
                else:
                    await asyncio.sleep(0)
            sys.resume_many([pid])
            await asyncio.gather(*pending)
            state = await sys.get_state(pid)
            assert state["seen"] == sent
            assert state["gen"] == version
