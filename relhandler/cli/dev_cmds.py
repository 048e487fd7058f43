"""The development loop: dev."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TextIO

import typer

from relhandler.cli._app import app
from relhandler.cli._output import command
from relhandler.errors import UsageError

__all__ = ["dev"]


def _line(stream: TextIO) -> Callable[[str], None]:
    def write(text: str) -> None:
        # plain writes, no rich wrapping: one reload is one line, whatever the width
        stream.write(text + "\n")
        stream.flush()

    return write


@app.command()
@command
def dev(
    project: Annotated[
        Path, typer.Option("--project", help="Project directory (its pyproject.toml).")
    ] = Path("."),
    debounce: Annotated[
        int,
        typer.Option(
            "--debounce",
            help="Milliseconds without a new change before a save is reloaded.",
            metavar="MS",
        ),
    ] = 50,
) -> None:
    """Boot a development node from the project's source tree and reload each module when
    it is saved (states migrated by code_change, rolled back on failure); Ctrl-C stops it.

    Example: relhandler dev --project .
    """
    from relhandler.control.dev import run_dev

    if debounce < 1:
        raise UsageError(f"--debounce {debounce}: give a number of milliseconds >= 1")
    code = run_dev(
        project,
        debounce_ms=debounce,
        say=_line(sys.stdout),
        warn=_line(sys.stderr),
    )
    raise typer.Exit(code)
