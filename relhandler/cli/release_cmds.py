"""Release handler commands: unpack, install, make-permanent, upgrade, downgrade, releases,
remove, reboot-old."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from relhandler.cli._app import app
from relhandler.cli._node import (
    JsonOpt,
    RestartTimeoutOpt,
    RootOpt,
    await_restart,
    default_root,
    node_call,
)
from relhandler.cli._output import command, console, emit, err_console, say
from relhandler.errors import AuthError, RelhandlerError, UnreachableError, UsageError
from relhandler.handler.store import read_releases, releases_path
from relhandler.release.relup import read_relup
from relhandler.release.restart import restarts

__all__ = [
    "downgrade",
    "install",
    "make_permanent",
    "reboot_old",
    "releases",
    "remove",
    "unpack",
    "upgrade",
]

SuspendOpt = Annotated[
    float | None,
    typer.Option(
        help="Seconds to wait for each process to suspend (overrides the relup's timeouts)."
    ),
]
CodeChangeOpt = Annotated[float | None, typer.Option(help="Seconds allowed per code_change.")]
LONG = 3600.0  # installs over many processes take a while; the node answers when done
INTERRUPTED = 130
"""Exit code after Ctrl-C while the node works (143 after SIGTERM): the shell's 128 + signal."""
RESTART_WAIT = 120.0  # default bound on a restarted node coming back


class _Terminated(BaseException):
    """SIGTERM while waiting for the node (raised by the handler, like KeyboardInterrupt)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@contextmanager
def _node_finishes(what: str, json_out: bool, then: str = "") -> Iterator[None]:
    """Ctrl-C or SIGTERM while waiting for the node: the node's work goes on without us, so
    say what happens next and exit ``INTERRUPTED`` (130; 143 for SIGTERM)."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except (KeyboardInterrupt, _Terminated) as e:
        code = 143 if isinstance(e, _Terminated) else INTERRUPTED
        msg = (
            f"interrupted: if the node accepted the {what}, it finishes it (done or rolled "
            f"back); `relhandler status` shows the outcome{then}"
        )
        if json_out:
            err = {"code": "interrupted", "message": msg, "exit_code": code}
            sys.stdout.write(json.dumps({"error": err}) + "\n")
            sys.stdout.flush()
        err_console.print(msg, markup=False, highlight=False)
        raise typer.Exit(code) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _install(
    root: Path | None, args: dict[str, Any], json_out: bool, restart_timeout: float
) -> dict[str, Any]:
    """The install op; when it restarts the node, wait for the node to answer on the new
    release (exit 1 if it fell back to the permanent one)."""
    res: dict[str, Any] = node_call(root, "install", args, json_out=json_out, timeout=LONG)
    if res.get("restart") and not res.get("dry_run"):
        if not json_out:
            say(f"installing {res['version']}: the node restarts on it (state not carried)")
        res = await_restart(root, res, restart_timeout)
    return res


def _describe_lost(res: dict[str, Any]) -> list[str]:
    """Lines for a person: that the node restarts, why, and whose state is lost."""
    lost = res.get("lost") or {}
    why = ", ".join(res.get("restart_reasons") or []) or "the relup restarts the node"
    conns = lost.get("connections") or 0
    open_conns = f", {conns} open connection{'s' if conns != 1 else ''} closed" if conns else ""
    lines = [
        f"this install RESTARTS the node ({why}): the state of "
        f"{lost.get('count', 'all')} processes is lost{open_conns}:"
    ]
    for p in lost.get("named") or []:
        conns = f", {p['connections']} connections" if p.get("connections") else ""
        lines.append(f"  {p['name']} {p['pid']} ({p.get('behaviour') or p['initial_call']}{conns})")
    for call, n in (lost.get("others") or {}).items():
        lines.append(f"  {n} × {call}")
    return lines


def _warn_restart(res: dict[str, Any]) -> None:
    for line in _describe_lost(res):
        err_console.print(line, markup=False, highlight=False)


def _restarts_ahead(root: Path | None, vsn: str, json_out: bool) -> None:
    """Before an upgrade or downgrade that restarts the node (its relup says so), say so
    and list the live processes whose state and connections will be lost."""
    r = (root or default_root()).resolve()
    cur = node_call(root, "ping", json_out=json_out).get("release")
    # an upgrade is in the target's relup (up from the current release), a downgrade in
    # the current one's (down to the target); no readable relup: the install says it
    entries: list[Any] = []
    for rel, direction, other in ((vsn, "up", cur), (cur, "down", vsn)):
        if not entries and rel is not None:
            try:
                doc = read_relup(r / "releases" / str(rel) / "relup.toml")
            except (OSError, RelhandlerError):
                continue
            side = doc.up if direction == "up" else doc.down
            entries = [e.instructions for e in side if e.vsn == other]
    if not (entries and restarts(entries[0])):
        return
    plan = node_call(root, "install", {"version": vsn, "dry_run": True}, json_out=json_out)
    if plan.get("restart"):
        _warn_restart(plan)


def _table(rows: list[dict[str, Any]]) -> Table:
    t = Table("name", "version", "status", "apps")
    for r in rows:
        style = {"permanent": "bold green", "current": "bold cyan", "old": "dim"}.get(
            r["status"], ""
        )
        # names and versions come from tarballs: cells are Text, never read as markup
        t.add_row(
            Text(str(r["name"])),
            Text(str(r["version"])),
            Text(str(r["status"]), style=style),
            Text(", ".join(map(str, r["apps"]))),
        )
    return t


def _install_args(
    vsn: str,
    suspend_timeout: float | None,
    code_change_timeout: float | None,
    dry_run: bool = False,
) -> dict[str, Any]:
    args: dict[str, Any] = {"version": vsn, "dry_run": dry_run}
    if suspend_timeout is not None:
        args["suspend_timeout"] = suspend_timeout
    if code_change_timeout is not None:
        args["code_change_timeout"] = code_change_timeout
    return args


def _show_then(res: dict[str, Any], vsn: str) -> None:
    _show_install(res)
    say(f"{vsn} is permanent")


def _show_install(res: dict[str, Any]) -> None:
    if res.get("dry_run"):
        if res.get("restart"):
            for line in _describe_lost(res):
                say(line)
        for s in res["steps"]:
            line = " ".join(map(str, s["instruction"]))
            say(f"{s['index']:>3}  {line}")
            for m, pids in (s.get("processes") or {}).items():
                say(
                    f"       {m}: {len(pids)} process(es) {' '.join(pids[:8])}"
                    f"{' …' if len(pids) > 8 else ''}"
                )
        return
    if res.get("restarted"):
        say(f"installed {res['version']} (from {res['from']}): the node restarted on it")
        return
    say(
        f"installed {res['version']} (from {res['from']}, {res['mode']}) in "
        f"{res['ms']:.1f} ms, {len(res['steps'])} steps"
    )


@app.command()
@command
def releases(root: RootOpt = None, json_out: JsonOpt = False) -> None:
    """Name, version and status of every release (read from disk when the node is down).

    Example: relhandler releases --root /srv/sample
    """
    try:
        rows = node_call(root, "releases", json_out=json_out)
    except AuthError:
        raise
    except UnreachableError:
        # the disk is the record: show it, and say that nothing is current
        r = (root or default_root()).resolve()
        rows = read_releases(r).rows()
        if not rows:
            raise
        err_console.print(
            f"note: no node is running at {r}; showing {releases_path(r)} "
            f"(the next start boots the permanent release)",
            markup=False,
            highlight=False,
        )
    emit(rows, json_out=json_out, human=lambda: console.print(_table(rows)))


@app.command()
@command
def unpack(
    tarball: Annotated[Path, typer.Argument(help="Release tarball.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify and unpack a release next to the running one (status unpacked).

    Example: relhandler unpack sample-2.0.0.tar.gz --root /srv/sample
    """
    res = node_call(
        root, "unpack", {"tarball": str(tarball.resolve())}, json_out=json_out, timeout=LONG
    )
    emit(
        res,
        json_out=json_out,
        human=lambda: say(
            f"release {res['version']} {'already ' if res['already'] else ''}unpacked"
        ),
    )


@app.command()
@command
def install(
    version: Annotated[str, typer.Argument(help="The release to upgrade or downgrade to.")],
    root: RootOpt = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan and the processes it touches; change nothing.")
    ] = False,
    suspend_timeout: SuspendOpt = None,
    code_change_timeout: CodeChangeOpt = None,
    restart_timeout: RestartTimeoutOpt = RESTART_WAIT,
    json_out: JsonOpt = False,
) -> None:
    """Upgrade or downgrade the running node to VERSION (rolled back in place on failure).

    A restart-type upgrade (changed dependencies or Python) waits for the node to answer on
    VERSION; if it falls back to the permanent release instead, the exit code is 1.

    Once the node has accepted the install it finishes it, done or rolled back, whatever
    happens to this command: after Ctrl-C (exit 130) or SIGTERM (exit 143), `relhandler
    status` shows the outcome, and `install VERSION` again follows it or reports it.

    Example: relhandler install 2.0.0 --dry-run
    """
    if not dry_run:
        _restarts_ahead(root, version, json_out)
    with _node_finishes(f"install of {version}", json_out):
        res = _install(
            root,
            _install_args(version, suspend_timeout, code_change_timeout, dry_run),
            json_out,
            restart_timeout,
        )
    emit(res, json_out=json_out, human=lambda: _show_install(res))


@app.command("make-permanent")
@command
def make_permanent(
    version: Annotated[str, typer.Argument(help="The current release.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make the current release permanent: the node boots it from now on.

    Example: relhandler make-permanent 2.0.0
    """
    res = node_call(root, "make_permanent", {"version": version}, json_out=json_out)
    emit(res, json_out=json_out, human=lambda: say(f"{version} is permanent"))


@app.command()
@command
def upgrade(
    tarball: Annotated[Path, typer.Argument(help="Release tarball to upgrade to.")],
    root: RootOpt = None,
    suspend_timeout: SuspendOpt = None,
    code_change_timeout: CodeChangeOpt = None,
    restart_timeout: RestartTimeoutOpt = RESTART_WAIT,
    confirm_within: Annotated[
        float | None,
        typer.Option(
            help="Keep the release current, not permanent, for this many seconds: "
            "`relhandler confirm VSN` (or --health) makes it permanent, else the node reverts."
        ),
    ] = None,
    health: Annotated[
        bool,
        typer.Option(
            "--health",
            help="With --confirm-within: the release's health checks passing for the whole "
            "window confirm it; one failing reverts at once.",
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            help="With --confirm-within: wait for the window's outcome (exit 1 if reverted)."
        ),
    ] = True,
    replace: Annotated[
        bool,
        typer.Option(
            help="If the version is unpacked (never installed) with other content, remove "
            "it and unpack this build instead."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Unpack + install + make-permanent in one step (for pipelines).

    Upgrading to the release that is already current and permanent does nothing (exit 0).

    A restart-type upgrade waits for the node to come back on the new release, then makes it
    permanent; the JSON says ``"restarted": true``. With --confirm-within the node holds the
    release for confirmation (docs/confirm.md); the window belongs to the node, so this
    command may be interrupted or killed without changing its outcome.

    Example: relhandler upgrade sample-2.0.0.tar.gz --confirm-within 60 --health
    """
    if health and confirm_within is None:
        raise UsageError("--health needs --confirm-within SECONDS (the window it checks)")
    if confirm_within is not None and not 0 < confirm_within < float("inf"):
        raise UsageError(f"--confirm-within must be a number of seconds > 0, got {confirm_within}")
    u = _unpack_for_upgrade(root, tarball, replace=replace, json_out=json_out)
    vsn = u["version"]
    if vsn == u.get("current") and u["status"] == "permanent":
        _already_current(u, json_out)
        return
    if confirm_within is not None:
        from relhandler.cli.pipeline_cmds import upgrade_confirmed

        args = _install_args(vsn, suspend_timeout, code_change_timeout)
        upgrade_confirmed(root, u, args, confirm_within, health, wait, json_out)
        return
    i, p = _install_permanently(
        root, vsn, suspend_timeout, code_change_timeout, json_out, restart_timeout
    )
    emit(
        {"unpack": u, "install": i, "make_permanent": p, "restarted": bool(i.get("restarted"))},
        json_out=json_out,
        human=lambda: _show_then(i, vsn),
    )


def _unpack_for_upgrade(
    root: Path | None, tarball: Path, *, replace: bool, json_out: bool
) -> dict[str, Any]:
    """Unpack ``tarball``; with ``replace``, an unpacked (never installed) release of the
    same version and other content is removed first."""
    args = {"tarball": str(tarball.resolve())}
    try:
        u: dict[str, Any] = node_call(root, "unpack", args, json_out=json_out, timeout=LONG)
    except RelhandlerError as e:
        if not (replace and e.code == "existing_release" and e.details.get("status") == "unpacked"):
            raise
        vsn = str(e.details["version"])
        node_call(root, "remove", {"version": vsn}, json_out=json_out)
        u = node_call(root, "unpack", args, json_out=json_out, timeout=LONG)
        u["replaced"] = True
    return u


def _already_current(u: dict[str, Any], json_out: bool) -> None:
    """The tarball is the release the node runs, and it is permanent: nothing to do. (One
    that is current but not permanent is left to install, which says so: it may be in a
    confirmation window.)"""
    vsn = u["version"]
    err_console.print(
        f"note: release {vsn} is already current and permanent; nothing to do",
        markup=False,
        highlight=False,
    )
    emit(
        {"unpack": u, "install": {"version": vsn, "already": True}, "make_permanent": None},
        json_out=json_out,
        human=lambda: say(f"{vsn} is permanent"),
    )


def _install_permanently(
    root: Path | None,
    vsn: str,
    suspend_timeout: float | None,
    code_change_timeout: float | None,
    json_out: bool,
    restart_timeout: float = RESTART_WAIT,
) -> tuple[Any, Any]:
    """``install`` then ``make_permanent``: the second half of upgrade, all of downgrade."""
    _restarts_ahead(root, vsn, json_out)
    with _node_finishes(f"install of {vsn}", json_out, f"; then `relhandler make-permanent {vsn}`"):
        i = _install(
            root,
            _install_args(vsn, suspend_timeout, code_change_timeout),
            json_out,
            restart_timeout,
        )
    return i, node_call(root, "make_permanent", {"version": vsn}, json_out=json_out)


@app.command()
@command
def downgrade(
    version: Annotated[str, typer.Argument(help="The older release to go back to.")],
    root: RootOpt = None,
    suspend_timeout: SuspendOpt = None,
    code_change_timeout: CodeChangeOpt = None,
    restart_timeout: RestartTimeoutOpt = RESTART_WAIT,
    json_out: JsonOpt = False,
) -> None:
    """Install an older release and make it permanent (after the restart, if it is one).

    Example: relhandler downgrade 1.0.0 --root /srv/sample
    """
    i, p = _install_permanently(
        root, version, suspend_timeout, code_change_timeout, json_out, restart_timeout
    )
    emit(
        {"install": i, "make_permanent": p, "restarted": bool(i.get("restarted"))},
        json_out=json_out,
        human=lambda: _show_then(i, version),
    )


@app.command()
@command
def remove(
    version: Annotated[str, typer.Argument(help="An unpacked or old release.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove a release that is neither current nor permanent, and lib dirs no other uses.

    Example: relhandler remove 1.0.0
    """
    res = node_call(root, "remove", {"version": version}, json_out=json_out)
    emit(
        res,
        json_out=json_out,
        human=lambda: say(f"removed {version} ({len(res['removed_lib_dirs'])} lib dirs)"),
    )


@app.command("reboot-old")
@command
def reboot_old(
    version: Annotated[str, typer.Argument(help="An old release.")],
    root: RootOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make an old release permanent and restart the node on it.

    Example: relhandler reboot-old 1.0.0
    """
    res = node_call(root, "reboot_old", {"version": version}, json_out=json_out)
    emit(res, json_out=json_out, human=lambda: say(f"restarting on {version}"))
