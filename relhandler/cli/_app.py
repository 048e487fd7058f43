"""Root typer app. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from relhandler import __version__

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    # errors are one line (cli/_output.py); --debug or RELHANDLER_DEBUG=1 shows tracebacks
    pretty_exceptions_enable=False,
    help="Hot code upgrades for Python services, the OTP way.",
)

# Modules that add commands to `app` when imported (one per command group), with the commands
# each adds. A run imports only the module of the command it names: importing them all costs more
# than most commands take. A name not listed here (or no name, `--help`) imports every module, so
# a new command works before it is added; tests/unit/cli/test_app.py checks the entries.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "relhandler.cli.build_cmds": ("new", "build", "deploy"),
    "relhandler.cli.plan_cmds": ("appup", "relup", "check"),
    "relhandler.cli.node_cmds": (
        "start",
        "stop",
        "ping",
        "status",
        "reload",
        "purge",
        "which",
        "rpc",
    ),
    "relhandler.cli.release_cmds": (
        "releases",
        "unpack",
        "install",
        "make-permanent",
        "upgrade",
        "downgrade",
        "remove",
        "reboot-old",
    ),
    "relhandler.cli.dev_cmds": ("dev",),
    "relhandler.cli.verify_cmds": ("verify",),
    "relhandler.cli.console_cmds": ("console",),
    "relhandler.cli.pipeline_cmds": ("events", "confirm"),
}


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show Python tracebacks (also: RELHANDLER_DEBUG=1)."
    ),
) -> None:
    """relhandler: build releases, generate relups, upgrade running nodes."""
    if debug:
        os.environ["RELHANDLER_DEBUG"] = "1"


def registered_names() -> dict[str, str]:
    """``{command or group name: module that registered it}`` for the modules imported so far."""
    out = {
        c.name or c.callback.__name__.replace("_", "-"): c.callback.__module__
        for c in app.registered_commands
        if c.callback is not None
    }
    for g in app.registered_groups:
        sub = g.typer_instance
        if g.name and sub is not None and sub.registered_commands:
            cb = sub.registered_commands[0].callback
            out[g.name] = cb.__module__ if cb is not None else ""
    return out


def _load_commands(argv: list[str] | None = None) -> None:
    """Import the command modules: only the one that owns ``argv``'s command when it is known."""
    name = next((a for a in argv or () if not a.startswith("-")), None)
    for module, names in COMMAND_MODULES.items():
        if name in names:
            importlib.import_module(module)
            if name in registered_names():
                return
    for module in COMMAND_MODULES:
        importlib.import_module(module)


def main() -> None:
    """Console entry point."""
    _load_commands(sys.argv[1:])
    app(prog_name="relhandler")
