"""The Node: one event loop's process table, registry and code server.

Booting a node from a release root (applications, control channel) builds on this in
``runtime/boot.py``; this module is the core that in-process tests use directly.
"""

from __future__ import annotations

from relhandler.runtime._kernel import Node, current_node

__all__ = ["Node", "current_node"]
