"""Node commands: start, stop, ping, status, reload, purge, which, rpc."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from relhandler.cli._app import app
from relhandler.cli._node import JsonOpt, RootOpt, default_root, node_call
from relhandler.cli._output import command, console, emit, say
from relhandler.errors import ReleaseError, UsageError

__all__ = ["ping", "purge", "reload", "rpc", "start", "status", "stop", "which"]


@app.command()
@command
def start(
    root: RootOpt = None,
    release: Annotated[
        str | None, typer.Option(help="Boot this release once instead of the permanent one.")
    ] = None,
    daemon: Annotated[bool, typer.Option("--daemon", help="Detach; log to log/node.log.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Boot the node of a release root (foreground unless --daemon).

    Example: relhandler start --root /srv/sample --daemon
    """
    from relhandler.control.daemon import run_node, start_daemon

    r = (root or default_root()).resolve()
    if daemon:
        pid = start_daemon(r, release=release)
        emit(
            {"pid": pid, "root": str(r)},
            json_out=json_out,
            human=lambda: say(f"node started on {r} (pid {pid})"),
        )
        return
    raise typer.Exit(run_node(r, release=release))


@app.command()
@command
def stop(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """Stop the node in order (applications stopped in reverse, terminate callbacks run).

    Example: relhandler stop --root /srv/sample
    """
    r = (root or default_root()).resolve()
    res = node_call(r, "stop", json_out=json_out)
    sock = r / "run" / "node.sock"
    deadline = time.monotonic() + 60
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if sock.exists():
        raise ReleaseError(
            f"the node at {r} accepted `stop` but is still running after 60s; "
            f"see its log, or end it with SIGTERM (pid in {r / 'run' / 'node.pid'})",
            code="stop_timeout",
        )
    emit(res, json_out=json_out, human=lambda: say("node stopped"))


@app.command()
@command
def ping(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """Check that the node answers (exit 3 if not).

    Example: relhandler ping --root /srv/sample
    """
    res = node_call(root, "ping", json_out=json_out, timeout=5.0)
    emit(res, json_out=json_out, human=lambda: say(f"pong (release {res['release']})"))


@app.command()
@command
def status(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """Release, applications, process count and uptime of the running node, and the
    install under way or the last one (its outcome: installed, refused, rolled_back, failed).

    Example: relhandler status --root /srv/sample --json
    """
    res = node_call(root, "status", json_out=json_out)

    def human() -> None:
        rel = res["release"]
        console.print(
            Text.assemble(
                (f"{rel['name']} {rel['version']}", "bold"),
                f" pid {res['pid']}, {res['processes']} processes, up {res['uptime_s']:.1f}s",
            )
        )
        inst = res.get("install")
        if inst:  # the install under way, or the last one since boot
            line = f"install of {inst['version']} (from {inst['from']}): {inst['state']}"
            if inst["state"] == "running" and inst.get("step"):
                line += f", at {inst['step']}"
            if inst.get("error"):
                line += f": {inst['error'].get('message', '')}"
            console.print(Text(line))
        win = res.get("confirm")
        if win:  # the confirm window open, or the last one since boot
            from relhandler.cli.pipeline_cmds import _window_line

            console.print(Text(_window_line(win)))
        t = Table("application", "version", "description")
        for a in res["applications"]:
            t.add_row(*(Text(str(a[k])) for k in ("name", "version", "description")))
        console.print(t)

    emit(res, json_out=json_out, human=human)


@app.command()
@command
def reload(
    module: Annotated[str, typer.Argument(help="Dotted name of a managed module.")],
    root: RootOpt = None,
    from_file: Annotated[
        Path | None, typer.Option("--from", help="Load a patched copy from this file.")
    ] = None,
    revert: Annotated[bool, typer.Option(help="Load the release's own version again.")] = False,
    migrate: Annotated[
        bool,
        typer.Option(
            help="As an appup update: migrate states with the new code_change (if it has "
            "one), kill processes in the oldest code, roll back on failure."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Load a module's code again on the running node (the shell's l/1).

    Example: relhandler reload sample_app.greeter --from /tmp/greeter_debug.py
    """
    if from_file is not None and revert:
        raise UsageError("use either --from FILE or --revert, not both")
    if migrate and (from_file is not None or revert):
        raise UsageError("--migrate reloads from the code path: drop --from/--revert")
    args: dict[str, Any] = {"module": module, "revert": revert}
    if from_file is not None:
        args["from"] = str(from_file.resolve())
    if migrate:
        args["migrate"] = True
    res = node_call(root, "reload", args, json_out=json_out)
    if migrate:
        from relhandler.handler.reload import summary

        emit(res, json_out=json_out, human=lambda: say(summary(res)))
        return
    emit(
        res,
        json_out=json_out,
        human=lambda: say(f"{module}: now {res['current_vsn']} from {res['current_file']}"),
    )


@app.command()
@command
def purge(
    module: Annotated[str, typer.Argument(help="Dotted name of a managed module.")],
    root: RootOpt = None,
    soft: Annotated[bool, typer.Option(help="Only if no process runs the old code.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Drop a module's old code (killing processes still in it, unless --soft).

    Example: relhandler purge sample_app.counter --soft
    """
    res = node_call(root, "purge", {"module": module, "soft": soft}, json_out=json_out)
    emit(res, json_out=json_out, human=lambda: console.print(res))
    if soft and not res["purged"]:
        raise typer.Exit(1)


@app.command()
@command
def which(
    module: Annotated[str, typer.Argument(help="Dotted name of a managed module.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Where a module's current and old versions came from.

    Example: relhandler which sample_app.counter
    """
    res = node_call(root, "which", {"module": module}, json_out=json_out)

    def human() -> None:
        say(f"{module}: current {res['current_vsn']} ({res['current_file']})")
        if res["old_vsn"]:
            say(f"  old {res['old_vsn']} ({res['old_file']})")

    emit(res, json_out=json_out, human=human)


_MAX_DEPTH = 200


def _depth(value: object) -> int:
    """How deeply JSON arrays/objects nest in ``value`` (iterative: no recursion limit)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, list | dict):
            deepest = max(deepest, d + 1)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


@app.command()
@command
def rpc(
    target: Annotated[str, typer.Argument(help="MODULE:FUNCTION")],
    args_json: Annotated[str, typer.Argument(help="JSON array of arguments.")] = "[]",
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Call a function on the node (in a fresh process) and print the result.

    Example: relhandler rpc sample_app.counter:get '[]'
    """
    module, sep, fun = target.partition(":")
    if not sep or not module or not fun:
        raise UsageError(f"rpc target {target!r} must be MODULE:FUNCTION")
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as e:
        raise UsageError(f"ARGS_JSON is not valid JSON: {e}") from e
    except RecursionError as e:
        raise UsageError(f"ARGS_JSON is nested deeper than {_MAX_DEPTH} levels") from e
    if _depth(args) > _MAX_DEPTH:
        # the node decodes frames with the same recursive parser: refuse here, in one line
        raise UsageError(f"ARGS_JSON is nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(args, list):
        raise UsageError("ARGS_JSON must be a JSON array, e.g. '[1, \"a\"]'")
    res = node_call(
        root, "rpc", {"module": module, "function": fun, "args": args}, json_out=json_out
    )
    emit(res, json_out=json_out, human=lambda: console.print_json(json.dumps(res)))
