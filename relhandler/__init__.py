"""relhandler: Erlang/OTP-style release handling for long-lived Python services.

Layers (imports point downward only; ``tests/unit/test_layers.py`` enforces it)::

    cli            typer front end: parses, calls one function, renders
     ├─> control.client, release, handler (types only)
    control.server authenticates, dispatches to the handler and runtime
     └─> handler   the release handler on the node (store, unpack, install)
          └─> runtime  processes, code server, behaviours, sys, applications, node
    release        offline toolchain: config, build, appup, relup, plan (pure: no asyncio)

``testing`` (the pytest plugin) sits beside ``cli``: it boots nodes through ``control``.

``errors``, ``terms`` and ``versions`` are leaves that every layer may import.
``release`` imports neither ``runtime`` nor ``handler``; ``runtime`` imports nothing above it.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
