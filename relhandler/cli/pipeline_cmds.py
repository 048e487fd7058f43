"""Pipeline commands: events (the node's event log), confirm (confirm or revert)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated, Any

import typer

from relhandler.cli._app import app
from relhandler.cli._node import RootOpt, default_root
from relhandler.cli._output import command, say
from relhandler.errors import InputError
from relhandler.handler.events import follow_events, parse_since, read_events, schema_text

__all__ = ["events"]

_SKIP = {"version"}  # shown in the kind column already (install.* and the like)


def _line(ev: dict[str, Any]) -> str:
    ts = ev.get("ts")
    when = (
        dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        if isinstance(ts, int | float)
        else "?"
    )
    data = ev.get("data") if isinstance(ev.get("data"), dict) else {}
    assert isinstance(data, dict)
    kind = str(ev.get("kind"))
    head = f"{when}  {kind:<18}"
    if "version" in data:
        head += f" {data['version']}"
    parts = []
    for k, v in data.items():
        if k in _SKIP:
            continue
        if isinstance(v, dict) and "message" in v:
            v = v["message"]
        elif not isinstance(v, str):
            v = json.dumps(v, separators=(",", ":"))
        parts.append(f"{k}={v}")
    return " ".join([head, *parts])


@app.command()
@command
def events(
    root: RootOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing events as the node writes them.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only events from then on: 10m, 2h, 1d back, an ISO 8601 time, or Unix seconds."
        ),
    ] = None,
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the events' JSON Schema and exit.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="One event per line, as JSON (the file's own lines).")
    ] = False,
) -> None:
    """Print the node's event log (log/events.jsonl and its rotated files), oldest first.

    Reads the files under the root directly: works with the node down. With --json each
    line is one event as the schema describes it (docs/events.md).

    Example: relhandler events --root /srv/sample --since 10m -f
    """
    if schema:
        sys.stdout.write(schema_text())
        return
    t = parse_since(since) if since is not None else None
    r = (root or default_root()).resolve()
    log_dir = r / "log"
    if (
        not follow
        and not (log_dir / "events.jsonl").exists()
        and not list(log_dir.glob("events.jsonl.*"))
    ):
        if not (r / "releases").is_dir():
            raise InputError(
                f"--root {r}: not a release root (no releases/); point --root at the node's root"
            )
        return  # a root whose node never wrote an event: nothing to print
    it = follow_events(log_dir, t) if follow else read_events(log_dir, t)
    try:
        for ev in it:
            if json_out:
                sys.stdout.write(json.dumps(ev, separators=(",", ":")) + "\n")
            else:
                say(_line(ev))
            sys.stdout.flush()
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
