"""Helpers for commands that talk to a running node."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from relhandler.control.client import Client

__all__ = ["JsonOpt", "RootOpt", "default_root", "node_call"]


def default_root() -> Path:
    return Path(os.environ.get("RELHANDLER_ROOT", "."))


RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Release root of the node (default: $RELHANDLER_ROOT, else .)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    if not enabled:
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        transient=True,
        console=None,
    ) as prog:
        task = prog.add_task("working", total=None)

        def on_event(ev: dict[str, Any]) -> None:
            prog.update(task, description=str(ev.get("message") or ev))

        yield on_event


def node_call(
    root: Path | None,
    op: str,
    args: dict[str, Any] | None = None,
    *,
    json_out: bool = False,
    timeout: float | None = 30.0,
) -> Any:
    """One request to the node at ``root``; a rich progress display on a TTY only."""
    r = (root or default_root()).resolve()
    show = sys.stderr.isatty() and not json_out
    with Client(r, timeout=timeout) as c, _progress(show) as on_event:
        return c.call(op, args, on_event=on_event, timeout=timeout)
