"""Output and error conventions shared by every command (cli.md, style §9).

* ``--json``: exactly one JSON document on stdout (the result, or ``{"error": {...}}``).
* People: rich tables/trees on stdout; errors on stderr as ``Error: …`` plus a hint.
* Exit codes come from :mod:`relhandler.errors`; a closed pipe exits quietly.
* An error is one line on stderr. No traceback reaches the user unless ``--debug`` or
  ``RELHANDLER_DEBUG=1`` asks for it: an unexpected exception is reported as one line too.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from relhandler.errors import RelhandlerError

__all__ = [
    "command",
    "console",
    "debug_enabled",
    "emit",
    "err_console",
    "json_default",
    "one_line",
    "say",
]

P = ParamSpec("P")
R = TypeVar("R")


def _stdout_console() -> Console:
    c = Console()
    if not c.is_terminal:
        # a pipe or a CI log: tables take the width of their content, never cut to $COLUMNS
        c = Console(width=_UNBOUNDED)
    return c


_UNBOUNDED = 10_000
console = _stdout_console()
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


def say(text: str) -> None:
    """Print a line that quotes user text (names, versions, paths): never read as markup."""
    console.print(text, markup=False, highlight=False)


def debug_enabled() -> bool:
    """``--debug`` was given or ``RELHANDLER_DEBUG`` is set (to anything but 0/empty)."""
    return os.environ.get("RELHANDLER_DEBUG", "") not in ("", "0")


def one_line(text: str) -> str:
    """``text`` with its line breaks folded, so an error stays one line."""
    return " | ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _report(e: RelhandlerError, json_out: bool) -> None:
    if json_out:
        sys.stdout.write(json.dumps({"error": e.to_wire()}, default=json_default) + "\n")
        sys.stdout.flush()
    # messages quote user input (e.g. "[[up]]", a release named "[bold]x"): never let rich
    # read it as markup
    msg = one_line(e.message)
    if e.hint:
        msg += f" (hint: {one_line(e.hint)})"
    err_console.print(f"[bold red]Error:[/] {escape(msg)}", highlight=False)


def _internal(e: Exception) -> RelhandlerError:
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        last = tb[-1]
        where = f" at {Path(last.filename).name}:{last.lineno}"
    return RelhandlerError(
        f"internal error: {type(e).__name__}: {e}{where}; this is a bug in relhandler — "
        f"rerun with --debug (or RELHANDLER_DEBUG=1) for the traceback and report it",
        code="internal",
    )


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
            if debug_enabled():
                traceback.print_exc()
            _report(e, json_out)
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:
            # the reader went away (`| head`): nothing more to say, and no traceback
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if debug_enabled():
                raise
            _report(_internal(e), json_out)
            raise typer.Exit(1) from None

    return wrapper
