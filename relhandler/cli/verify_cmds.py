"""``relhandler verify``: rehearse an upgrade before shipping it."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from relhandler.cli._app import app
from relhandler.cli._node import JsonOpt
from relhandler.cli._output import command, console, emit, err_console
from relhandler.errors import UsageError

__all__ = ["verify"]


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _lines(json_out: bool) -> Iterator[Callable[[str], None]]:
    """Progress: a rich spinner on a TTY, plain lines on stderr elsewhere, none for --json."""
    if json_out:
        yield lambda _s: None
        return
    if not sys.stderr.isatty():

        def plain(s: str) -> None:
            err_console.print(s, markup=False, highlight=False)

        yield plain
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as prog:
        task = prog.add_task("verify", total=None)

        def live(s: str) -> None:
            prog.update(task, description=s)
            prog.console.print(Text(s, style="dim"))

        yield live


def _table(rep: object) -> Table:
    from relhandler.control.rehearsal import Report

    assert isinstance(rep, Report)
    t = Table(
        Column("phase", no_wrap=True, min_width=len("upgrade-again")),
        "release",
        "calls",
        "failed",
        "max latency ms",
        "migrated",
        "suspended ms",
        "round-tripped",
        "health",
        title=f"verify {rep.old} → {rep.new}",
    )
    for p in rep.phases:
        rt = (
            f"{p.roundtrip_ok}/{p.roundtrip_ok + p.roundtrip_failed}"
            + (f" ({p.roundtrip_exempt} exempt)" if p.roundtrip_exempt else "")
            if p.name == "downgrade"
            else "-"
        )
        hl = f"{p.health_passed}/{p.health_passed + p.health_failed}"
        t.add_row(
            Text(p.name),
            Text(p.release),
            str(p.calls),
            Text(str(p.failed), style="bold red" if p.failed else ""),
            f"{p.max_latency_ms:.1f}",
            str(p.migrated),
            f"{p.suspended_ms:.2f}",
            Text(rt, style="bold red" if p.roundtrip_failed else ""),
            Text(hl, style="bold red" if p.health_failed else ""),
        )
    return t


@app.command()
@command
def verify(
    from_tarball: Annotated[
        Path, typer.Option("--from", help="The release running now (its tarball).")
    ],
    to_tarball: Annotated[
        Path, typer.Option("--to", help="The release to ship (its tarball, with the relup).")
    ],
    duration: Annotated[float, typer.Option(help="Seconds of load in each phase.", min=0.0)] = 2.0,
    keep_root: Annotated[
        Path | None,
        typer.Option(help="Rehearse in this new directory and keep it (logs, releases)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Rehearse an upgrade in a temporary root: boot FROM, drive load through the release's
    own hooks (its tool.relhandler.verify table), upgrade, run the health checks, downgrade
    (checking that every migrated state round-trips: down(up(s)) == s), upgrade again.
    Exit 1 on any failure, naming the phase, the process, the module and the exception.

    Example: relhandler verify --from sample-1.0.0.tar.gz --to sample-2.0.0.tar.gz
    """
    from relhandler.control.rehearsal import rehearse

    for opt, p in (("--from", from_tarball), ("--to", to_tarball)):
        if not p.is_file():
            raise UsageError(f"{opt} {p}: no such file; give a release tarball")
    if keep_root is not None and keep_root.exists() and any(keep_root.iterdir()):
        raise UsageError(f"--keep-root {keep_root}: not empty; give a new or empty directory")
    # SIGTERM (a CI job cancelled) unwinds like Ctrl-C: the scratch node is stopped and its
    # root removed on the way out
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with _lines(json_out) as say:
            rep = rehearse(
                from_tarball, to_tarball, duration=duration, on_line=say, keep_root=keep_root
            )
    except KeyboardInterrupt:
        err_console.print("interrupted: the rehearsal node was stopped", highlight=False)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)

    def human() -> None:
        console.print(_table(rep))
        if rep.ok:
            console.print(Text(f"verify passed: {rep.old} → {rep.new} → {rep.old} → {rep.new}"))

    emit(rep.to_json(), json_out=json_out, human=human)
    if not rep.ok:
        for f in rep.failures:
            err_console.print(Text.assemble(("Error: ", "bold red"), f.line()))
        raise typer.Exit(1)
