"""Pipeline commands: events (the node's event log), confirm (confirm or revert)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated, Any

import typer

from relhandler.cli._app import app
from relhandler.cli._node import JsonOpt, RootOpt, default_root, node_call
from relhandler.cli._output import command, emit, say
from relhandler.errors import InputError, ReleaseError
from relhandler.handler.events import follow_events, parse_since, read_events, schema_text

__all__ = ["confirm", "events", "upgrade_confirmed"]

LONG = 3600.0

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


def _window_line(w: dict[str, Any]) -> str:
    """One line on a confirm window, as ``status`` and ``upgrade`` print it."""
    vsn = w["version"]
    if w["state"] == "pending":
        how = (
            f"health checks {', '.join(w['health'])} must pass until then"
            if w.get("health")
            else f"`relhandler confirm {vsn}` makes it permanent"
        )
        return (
            f"release {vsn} awaits confirmation: {w['remaining_s']:.0f}s left, else it "
            f"reverts to {w['from']}; {how}"
        )
    if w["state"] == "confirmed":
        return f"release {vsn} confirmed ({w.get('detail')}): it is permanent"
    return (
        f"release {vsn} {w['state'].replace('_', ' ')} to {w['from']} by "
        f"{w.get('how', 'downgrade')} ({w.get('reason')}: {w.get('detail')})"
    )


def _outcome(w: dict[str, Any]) -> None:
    if w["state"] in ("reverted", "revert_failed"):
        raise ReleaseError(_window_line(w), code="reverted", details={"confirm": w})


def upgrade_confirmed(
    root: Any,
    unpacked: dict[str, Any],
    args: dict[str, Any],
    within: float,
    health: bool,
    wait: bool,
    json_out: bool,
) -> None:
    """``upgrade --confirm-within``: install with a window, then (unless --no-wait) wait
    for its outcome. The node owns the window: killing this process changes nothing."""
    from relhandler.cli.release_cmds import _node_finishes

    vsn = unpacked["version"]
    then = "; the confirm window goes on in the node, whatever happens to this command"
    with _node_finishes(f"install of {vsn}", json_out, then):
        i = node_call(
            root,
            "install",
            {**args, "confirm_within": within, "health": health},
            json_out=json_out,
            timeout=LONG,
        )
    w = i.get("confirm") or {}
    if not wait:
        emit(
            {"unpack": unpacked, "install": i, "confirm": w},
            json_out=json_out,
            human=lambda: say(_window_line(w)),
        )
        return
    if not json_out:
        if "ms" in i:
            say(f"installed {vsn} (from {i['from']}, {i['mode']}) in {i['ms']:.1f} ms")
        say(_window_line(w))
    with _node_finishes(f"confirm window of {vsn}", json_out, then):
        w = node_call(
            root, "confirm_wait", {"version": vsn}, json_out=json_out, timeout=within + LONG
        )
    out = {"unpack": unpacked, "install": i, "confirm": w}
    if w["state"] in ("reverted", "revert_failed"):
        if json_out:
            err = ReleaseError(_window_line(w), code="reverted")
            sys.stdout.write(json.dumps({**out, "error": err.to_wire()}, indent=2) + "\n")
            raise typer.Exit(err.exit_code)
        _outcome(w)
    emit(out, json_out=json_out, human=lambda: say(_window_line(w)))


@app.command()
@command
def confirm(
    version: Annotated[str, typer.Argument(help="The release awaiting confirmation.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Confirm a release installed with `upgrade --confirm-within`: it becomes permanent.

    Exit 1 (not_pending) if no confirmation of VERSION is pending: never installed with a
    window, or the window already ended (reverted; `relhandler status` says why).

    Example: relhandler confirm 2.0.0 --root /srv/sample
    """
    w = node_call(root, "confirm", {"version": version}, json_out=json_out, timeout=LONG)
    emit(w, json_out=json_out, human=lambda: say(_window_line(w)))
