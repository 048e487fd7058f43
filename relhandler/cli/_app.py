"""Root typer app. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import importlib
import os

import typer

from relhandler import __version__

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    # errors are one line (cli/_output.py); --debug or RELHANDLER_DEBUG=1 shows tracebacks
    pretty_exceptions_enable=False,
    help="Hot code upgrades for Python services, the OTP way.",
)

# Modules that add commands to `app` when imported (one per command group).
COMMAND_MODULES = (
    "relhandler.cli.build_cmds",  # new, build, deploy
    "relhandler.cli.plan_cmds",  # appup generate, relup, check
    "relhandler.cli.node_cmds",  # start, stop, ping, status, reload, purge, which, rpc
    "relhandler.cli.release_cmds",  # unpack, install, make-permanent, upgrade, downgrade, ...
    "relhandler.cli.dev_cmds",  # dev
    "relhandler.cli.verify_cmds",  # verify
    "relhandler.cli.console_cmds",  # console
    "relhandler.cli.pipeline_cmds",  # events, confirm
)


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


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def main() -> None:
    """Console entry point."""
    _load_commands()
    app(prog_name="relhandler")
