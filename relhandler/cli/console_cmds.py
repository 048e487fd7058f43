"""``relhandler console``: a Python REPL evaluated inside the running node.

The client reads and edits lines (readline: history in ``~/.relhandler_history``, Tab
completion asked of the node), decides when an input is complete, and sends it; the node
evaluates it in the session's shell process (control/console.py) and answers with the
value's repr, the captured output, or the traceback.
"""

from __future__ import annotations

import ast
import codeop
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from relhandler.cli._app import app
from relhandler.cli._node import RootOpt, default_root
from relhandler.cli._output import command
from relhandler.control.client import Client
from relhandler.errors import RelhandlerError

__all__ = ["console"]

HISTORY = Path("~/.relhandler_history")
PS1, PS2 = ">>> ", "... "


def _show(res: dict[str, Any]) -> bool:
    """Print one input's outcome; True if it raised."""
    for note in res.get("notes") or []:
        sys.stderr.write(f"# {note}\n")
    if res.get("stdout"):
        sys.stdout.write(res["stdout"])
    if res.get("stderr"):
        sys.stderr.write(res["stderr"])
    sys.stdout.flush()
    if res.get("error"):
        sys.stderr.write(res["error"])
        sys.stderr.flush()
        return True
    if res.get("value") is not None:
        sys.stdout.write(res["value"] + "\n")
        sys.stdout.flush()
    return False


class _Session:
    def __init__(self, root: Path) -> None:
        self.root = root
        # evaluations may take as long as they take; short requests pass their own timeout
        self.client = Client(root, timeout=None).open()
        self.info: dict[str, Any] = self.client.call("console", {"action": "open"}, timeout=30)
        self.sid: str = self.info["session"]

    def eval(self, source: str) -> dict[str, Any]:
        with self._interruptible():
            res: dict[str, Any] = self.client.call(
                "console", {"action": "eval", "session": self.sid, "source": source}
            )
        return res

    @contextlib.contextmanager
    def _interruptible(self) -> Iterator[None]:
        """Ctrl-C while an input runs asks the node, on a second connection, to kill the
        shell process; the first connection then gets the input's (interrupted) reply."""
        if not hasattr(signal, "SIGINT"):
            yield
            return

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            with contextlib.suppress(RelhandlerError), Client(self.root, timeout=5) as c:
                c.call("console", {"action": "interrupt", "session": self.sid})

        try:
            old = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)

    def complete(self, text: str) -> list[str]:
        res = self.client.call(
            "console", {"action": "complete", "session": self.sid, "text": text}, timeout=5
        )
        return list(res.get("matches", []))

    def close(self) -> None:
        self.client.close()


def _complete_source(compiler: codeop.CommandCompiler, source: str) -> bool:
    """Whether ``source`` is a whole input (a syntax error is whole: the node reports it)."""
    try:
        return compiler(source, "<console>", "single") is not None
    except (SyntaxError, OverflowError, ValueError):
        return True


def _setup_readline(session: _Session) -> Any:
    try:
        import readline
    except ImportError:
        return None
    matches: list[str] = []

    def completer(text: str, state: int) -> str | None:
        nonlocal matches
        if state == 0:
            if not text.strip():
                # Tab at the start of a line indents, as the Python REPL does
                readline.insert_text("\t")
                readline.redisplay()
                matches = [""]
            else:
                try:
                    matches = session.complete(text)
                except RelhandlerError:
                    matches = []
        return matches[state] if state < len(matches) else None

    readline.set_completer(completer)
    readline.set_completer_delims(" \t\n`~!@#$%^&*()-=+[{]}\\|;:'\",<>/?")
    readline.parse_and_bind("tab: complete")
    hist = HISTORY.expanduser()
    with contextlib.suppress(OSError):
        readline.read_history_file(hist)
    readline.set_history_length(1000)
    return readline


def _interactive(session: _Session) -> int:
    info = session.info
    sys.stderr.write(
        f"relhandler console on {info['node']} (os pid {info['os_pid']}), shell process "
        f"{info['shell']}\n"
        f"in scope: {', '.join(info['scope'])}; modules: {', '.join(info['modules']) or '-'}\n"
        "top-level await works; Ctrl-C interrupts an input; Ctrl-D leaves "
        "(the node keeps running)\n"
    )
    rl = _setup_readline(session)
    compiler = codeop.CommandCompiler()
    compiler.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    lines: list[str] = []
    try:
        while True:
            try:
                line = input(PS2 if lines else PS1)
            except EOFError:
                sys.stderr.write("\n")
                return 0
            except KeyboardInterrupt:
                sys.stderr.write("\nKeyboardInterrupt\n")
                lines = []
                continue
            lines.append(line)
            source = "\n".join(lines)
            if not _complete_source(compiler, source):
                continue  # a block goes on until an empty line, as in the Python REPL
            lines = []
            if not source.strip():
                continue
            res = session.eval(source)
            _show(res)
            if res.get("leave"):
                return 0
    finally:
        if rl is not None:
            with contextlib.suppress(OSError):
                rl.write_history_file(HISTORY.expanduser())


@app.command()
@command
def console(
    root: RootOpt = None,
    expr: Annotated[
        str | None,
        typer.Option(
            "-c",
            "--command",
            help="Evaluate this input, print its value, exit (1 if it raised).",
        ),
    ] = None,
) -> None:
    """A Python console evaluated inside the running node: call, cast, send, whereis,
    process_info, which, get_state, reload and the loaded modules are in scope; top-level
    await works. Ctrl-D leaves it, the node keeps running. Without a TTY (and without -c)
    it evaluates what stdin holds as one input. This runs any code on the node: it needs
    the node's cookie, exactly as install does.

    Example: relhandler console --root /srv/sample -c 'await get_state("counter")'
    """
    r = (root or default_root()).resolve()
    session = _Session(r)
    try:
        if expr is not None:
            failed = _show(session.eval(expr))
        elif sys.stdin.isatty():
            raise typer.Exit(_interactive(session))
        else:
            failed = _show(session.eval(sys.stdin.read()))
    finally:
        session.close()
    raise typer.Exit(1 if failed else 0)
