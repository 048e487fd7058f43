"""The ``relhandler`` command line (typer)."""

from __future__ import annotations

from ._app import main as main

__all__ = ["main"]
