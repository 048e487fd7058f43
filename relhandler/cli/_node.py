"""Helpers for commands that talk to a running node."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from relhandler.control.client import Client
from relhandler.errors import InstallError, UnreachableError

__all__ = ["JsonOpt", "RestartTimeoutOpt", "RootOpt", "await_restart", "default_root", "node_call"]


def default_root() -> Path:
    return Path(os.environ.get("RELHANDLER_ROOT", "."))


RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Release root of the node (default: $RELHANDLER_ROOT, else .)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
RestartTimeoutOpt = Annotated[
    float,
    typer.Option(
        help="Seconds to wait for a restarted node to answer on the new release "
        "(a restart-type upgrade)."
    ),
]


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


def await_restart(root: Path | None, res: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Wait until the node that ``res`` (an install's result) restarted answers again.

    A re-exec keeps the OS pid, so the new node is told from the old one by its boot id.
    Returns ``res`` with ``restarted: true``. Raises :class:`InstallError` (exit 1) when the
    node came back on another release (the new one failed to boot and it fell back to the
    permanent one), :class:`UnreachableError` (exit 3) when nothing answered in time.
    """
    r = (root or default_root()).resolve()
    vsn = res["version"]
    before = res.get("boot_id")
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            with Client(r, timeout=2.0) as c:
                pong = c.call("ping", timeout=2.0)
        except UnreachableError as e:
            last = e.message
            pong = None
        if isinstance(pong, dict) and pong.get("boot_id") != before:
            if pong.get("release") == vsn:
                return {**res, "restarted": True, "release": vsn}
            failure = pong.get("boot_failure") or {}
            why = failure.get("error", "see log/node.log") if isinstance(failure, dict) else ""
            raise InstallError(
                f"release {vsn} did not come up after the restart ({why}); the node fell back "
                f"to the permanent release {pong.get('release')} and {vsn} is still unpacked — "
                f"see {r / 'log' / 'node.log'} or the node's stderr",
                code="restart_failed",
                details={"boot_failure": failure, "release": pong.get("release")},
            )
        if time.monotonic() >= deadline:
            raise UnreachableError(
                f"the node at {r} restarted for release {vsn} but did not answer within "
                f"{timeout:g}s ({last}); check it with `relhandler status --root {r}`",
                code="restart_timeout",
            )
        time.sleep(0.1)
