"""Output and error conventions shared by every command (cli.md, style §9).

* ``--json``: exactly one JSON document on stdout (the result, or ``{"error": {...}}``).
* People: rich tables/trees on stdout; errors on stderr as ``Error: …`` plus a hint.
* Exit codes come from :mod:`relhandler.errors`; a closed pipe exits quietly.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from relhandler.errors import RelhandlerError

__all__ = ["command", "console", "emit", "err_console", "json_default"]

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line


def json_default(o: Any) -> Any:
    """Fallback JSON encoding for tuples-as-lists, paths, sets and dataclasses."""
    import dataclasses
    from pathlib import PurePath

    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, PurePath):
        return str(o)
    if isinstance(o, set | frozenset):
        return sorted(o)
    return str(o)


def emit(result: Any, *, json_out: bool, human: Callable[[], None] | None = None) -> None:
    """Print a command's result: JSON for pipelines, ``human()`` (rich) for people."""
    if json_out:
        sys.stdout.write(json.dumps(result, default=json_default, indent=2) + "\n")
        sys.stdout.flush()
    elif human is not None:
        human()


def _report(e: RelhandlerError, json_out: bool) -> None:
    if json_out:
        sys.stdout.write(json.dumps({"error": e.to_wire()}, default=json_default) + "\n")
        sys.stdout.flush()
    # messages quote user input (e.g. "[[up]]"): never let rich read it as markup
    err_console.print(f"[bold red]Error:[/] {escape(e.message)}", highlight=False)
    if e.hint:
        err_console.print(f"[dim]hint:[/] {escape(e.hint)}", highlight=False)


def command(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a typer command: map RelhandlerError to stderr + exit code, quiet on EPIPE.

    The wrapped command's ``json_out`` keyword (the ``--json`` flag) selects the error format.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        json_out = bool(kwargs.get("json_out", False))
        try:
            return fn(*args, **kwargs)
        except RelhandlerError as e:
            _report(e, json_out)
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:
            # the reader went away (`| head`): nothing more to say, and no traceback
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(1) from None

    return wrapper
