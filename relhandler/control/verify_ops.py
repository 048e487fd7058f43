"""Ops ``relhandler verify`` drives a rehearsal node with: calls by name, state capture, and
the round-trip check ``down(up(s)) == s``.

The round trip is checked on the node, with Python equality, on copies: ``verify_capture``
copies the live state of each process a relup migrates (before the upgrade, and again right
after it: ``up(s)`` as the real process computed it), and ``verify_roundtrip`` runs the
current (new) code's ``code_change`` with ``("down", vsn)`` over the copy of ``up(s)``, as the
downgrade will, and compares the result with the copy of ``s``. Traffic between the upgrade
and the downgrade changes the live state, never these copies, so the check holds under load.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relhandler.control.node_ops import jsonable
from relhandler.errors import ProcessError, ReleaseInputError, UsageError
from relhandler.handler.install import find_processes
from relhandler.release.relup import read_relup
from relhandler.runtime import gen_server
from relhandler.runtime import sys as rsys
from relhandler.runtime.process import run_in_process
from relhandler.runtime.statecopy import copy_state

if TYPE_CHECKING:
    from relhandler.control.daemon import NodeMain
    from relhandler.control.server import Op, Progress

__all__ = ["as_request", "register"]

CODE_CHANGE_TIMEOUT = 5.0


def as_request(value: Any) -> Any:
    """A JSON request as Python code expects it: every array becomes a tuple."""
    if isinstance(value, list):
        return tuple(as_request(v) for v in value)
    if isinstance(value, dict):
        return {k: as_request(v) for k, v in value.items()}
    return value


def _code_changes(instructions: Any, mode: str) -> list[tuple[str, Any]]:
    """``(module, extra)`` of every ``code_change`` of ``mode`` in a low-level script."""
    out: list[tuple[str, Any]] = []
    for i in instructions:
        if isinstance(i, tuple | list) and i and i[0] == "code_change":
            m = i[1] if len(i) == 3 else "up"
            if m == mode:
                out.extend((mod, extra) for mod, extra in i[-1])
    return out


def _str_list(args: dict[str, Any], key: str) -> list[str]:
    v = args.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise UsageError(f"'{key}' must be an array of strings")
    return v


def register(ops: dict[str, Op], main: NodeMain) -> None:
    """Add the verify ops to the node's ops."""
    node = main.node
    # tag -> pid -> (modules, module versions, copy of the state)
    saved: dict[str, dict[str, tuple[list[str], dict[str, str | None], Any]]] = {}

    async def verify_call(args: dict[str, Any], progress: Progress) -> Any:
        name = args.get("name")
        if not isinstance(name, str) or not name:
            raise UsageError("verify_call needs 'name' (a registered process)")
        request = as_request(args.get("request"))
        try:
            return jsonable(await run_in_process(node, gen_server.call, name, request))
        except Exception as e:
            raise ProcessError(
                f"call {name} {request!r} raised {type(e).__name__}: {e}", code="rpc_failed"
            ) from e

    async def verify_capture(args: dict[str, Any], progress: Progress) -> Any:
        tag = args.get("tag")
        if not isinstance(tag, str):
            raise UsageError("verify_capture needs 'tag'")
        only = set(_str_list(args, "modules"))
        out: dict[str, Any] = {}
        snap: dict[str, tuple[list[str], dict[str, str | None], Any]] = {}
        for _sup, _cid, pid, mods in find_processes(node):
            p = node.processes.get(pid)
            if p is None or not isinstance(p.sys, rsys.SysState):
                continue
            if p.behaviour == "supervisor":
                continue  # its state is the supervisor's own, rebuilt by init on code_change
            hit = [m for m in mods if m in only]
            if not hit:
                continue
            vsns = {m: node.code.vsn(m) if node.code.is_loaded(m) else None for m in hit}
            snap[str(pid)] = (hit, vsns, copy_state(p.sys.state))
            out[str(pid)] = {"modules": hit, "behaviour": p.behaviour}
        saved[tag] = snap
        return out

    async def verify_roundtrip(args: dict[str, Any], progress: Progress) -> Any:
        """Run the current code's down code_change over the ``after`` copies; compare each
        with its ``before`` copy. One row per (process, module)."""
        before = saved.get(str(args.get("before")))
        after = saved.get(str(args.get("after")))
        new, old = args.get("new"), args.get("old")
        if before is None or after is None or not isinstance(new, str) or not isinstance(old, str):
            raise UsageError("verify_roundtrip needs captured 'before'/'after' tags, 'new', 'old'")
        exempt = set(_str_list(args, "exempt"))
        path = Path(main.root) / "releases" / new / "relup.toml"
        entry = read_relup(path).down_to(old) if path.exists() else None
        if entry is None:
            raise ReleaseInputError(
                f"release {new} has no relup down to {old}; run "
                f"`relhandler relup --to {new} --from {old}`",
                code="no_matching_relup",
            )
        downs = _code_changes(entry.instructions, "down")
        rows: list[dict[str, Any]] = []
        for pid_s, (mods, vsns, s0) in before.items():
            got = after.get(pid_s)
            proc = next((p for pid, p in node.processes.items() if str(pid) == pid_s), None)
            for mod in mods:
                row: dict[str, Any] = {"pid": pid_s, "module": mod}
                rows.append(row)
                if mod in exempt:
                    row["result"] = "exempt"
                    continue
                if got is None or proc is None or not isinstance(proc.sys, rsys.SysState):
                    row["result"] = "gone"
                    row["error"] = "the process is not alive after the upgrade"
                    continue
                state = copy_state(got[2])
                for m, extra in downs:
                    if m not in got[0]:
                        continue
                    try:
                        r = proc.sys.code_change_with(
                            node.code.current(m), m, ("down", vsns.get(m)), state, extra
                        )
                        if inspect.isawaitable(r):
                            r = await asyncio.wait_for(r, CODE_CHANGE_TIMEOUT)
                        state = r
                    except Exception as e:
                        row["result"] = "raised"
                        row["error"] = f"code_change of {m} down raised {type(e).__name__}: {e}"
                        break
                else:
                    try:
                        same = bool(state == s0)
                    except Exception as e:  # an __eq__ that raises is a difference too
                        same = False
                        row["error"] = f"comparing the states raised {type(e).__name__}: {e}"
                    row["result"] = "ok" if same else "differs"
                    if not same:
                        row["before"] = repr(s0)[:500]
                        row["after_down"] = repr(state)[:500]
        return rows

    ops.update(
        {
            "verify_call": verify_call,
            "verify_capture": verify_capture,
            "verify_roundtrip": verify_roundtrip,
        }
    )
