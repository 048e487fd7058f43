"""Differential test: a restart that fails is retried as OTP's supervisor does.

tests/otp/sup/sup_retry.erl and the Python module below are the same supervisor: a
one_for_one child whose restart fails ``fails`` times in a row after a crash. OTP's
``try_again_restart`` retries from the mailbox, each try counting against the intensity;
the number of start attempts and how the supervisor ends must be equal.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from relhandler.runtime import Node, supervisor
from tests.node.conftest import CodeDir, until

pytestmark = pytest.mark.otp

ERL = Path(__file__).parent / "sup" / "sup_retry.erl"

CHILD = """
from relhandler.runtime import spawn_link, receive

CNT = {"attempts": 0, "fails": 0, "intensity": 1}

async def _loop():
    while True:
        await receive()

def start_child():
    CNT["attempts"] += 1
    if CNT["fails"] > 0:
        CNT["fails"] -= 1
        return ("error", "not_yet")
    return spawn_link(_loop)

def init(args):
    return ("ok", ({"strategy": "one_for_one", "intensity": CNT["intensity"], "period": 60},
                   [{"id": "c", "start": (__name__, "start_child", [])}]))
"""


@pytest.fixture(scope="module")
def otp(erl: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["erlc", "-o", d, str(ERL)], check=True, capture_output=True)
        out = subprocess.run(
            [erl, "-noshell", "-pa", d, "-run", "sup_retry", "main"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


async def _ours(code_dir: CodeDir, intensity: int, fails: int) -> dict[str, Any]:
    async with Node() as node:
        code_dir.write("retry", CHILD)
        node.code.set_path([code_dir.root])
        mod = node.code.current(code_dir.name("retry"))
        mod.CNT.update(intensity=intensity, attempts=0, fails=0)
        sup = await supervisor.start(code_dir.name("retry"), None)
        exits: list[Any] = []
        node.processes[sup].add_watcher(exits.append)
        [child] = await supervisor.which_children(sup)
        mod.CNT.update(attempts=0, fails=fails)
        node._kill(node.processes[child.pid], "crash")  # type: ignore[index]
        with contextlib.suppress(AssertionError):  # neither: the outcome says so
            await until(lambda: bool(exits) or _running(node, sup, child.pid), timeout=2)
        outcome = str(exits[0]) if exits else "running"
        return {
            "intensity": intensity,
            "fails": fails,
            "attempts": mod.CNT["attempts"],
            "outcome": outcome,
        }


def _running(node: Node, sup: Any, old: Any) -> bool:
    """The child runs again (a new pid) and nothing is left for the supervisor to do."""
    p = node.processes.get(sup)
    if p is None:
        return False
    pid = p.sys.state.children[0].pid
    return pid is not None and pid != old and not p.mailbox


async def test_failed_restarts_are_retried_as_in_otp(
    otp: list[dict[str, Any]], tmp_path: Path
) -> None:
    assert len(otp) == 4
    ours = []
    for k, r in enumerate(otp):
        (tmp_path / str(k)).mkdir()
        ours.append(await _ours(CodeDir(tmp_path / str(k)), r["intensity"], r["fails"]))
    assert ours == otp
