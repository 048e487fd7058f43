"""What a restart-type install loses on this node, said before the node restarts: the live
processes (their state) and the connections they hold, with why the node restarts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relhandler.release.model import ReleaseSpec
from relhandler.release.restart import restart_report
from relhandler.runtime import Node

__all__ = ["live_processes", "restart_loss"]

NAMED_MAX = 100  # a node with more registered processes lists the first ones, counts all


def live_processes(node: Node) -> dict[str, Any]:
    """The node's live processes: the registered ones by name, the others counted by
    initial call, and the connections (transports) they own."""
    procs = [p for p in node.processes.values() if p.alive]
    named = sorted(
        (
            {
                "name": p.name,
                "pid": str(p.pid),
                "initial_call": p.initial_call,
                "behaviour": p.behaviour,
                "connections": len(p.transports or ()),
            }
            for p in procs
            if p.name is not None
        ),
        key=lambda r: str(r["name"]),
    )
    others = Counter(p.initial_call for p in procs if p.name is None)
    return {
        "count": len(procs),
        "connections": sum(len(p.transports or ()) for p in procs),
        "named": named[:NAMED_MAX],
        "others": dict(others.most_common()),
    }


def restart_loss(
    node: Node, current: ReleaseSpec, target: ReleaseSpec, root: Path, terms: Sequence[Any]
) -> dict[str, Any]:
    """``restart_reasons`` (what changed), ``dependencies`` and ``lost`` (the live
    processes) for an install of ``target`` whose script ``terms`` restart the node."""
    lib = root / "lib"
    rep = restart_report(current, lib, target, lib, terms)
    return {
        "restart_reasons": rep.reasons() if rep is not None else ["the relup restarts the node"],
        "dependencies": [d.to_wire() for d in rep.deps] if rep is not None else [],
        "lost": live_processes(node),
    }
