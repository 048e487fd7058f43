"""HTTP/1.1 and websocket serving on a node, upgraded live (see docs/web.md).

An application declares listeners in its env (``listeners = [{name, host, port, app |
handler, certfile, keyfile, ...}]``) and puts ``web.child_spec("<app>")`` in its top
supervisor. A listener serves either an ASGI 3 application (``app = "module:attr"``, looked
up on the module's current version for every request and every websocket) or a websocket
behaviour module (``handler = "module"``, see ``relhandler.web.websocket``) whose connection
processes the release handler suspends and upgrades like GenServers.

Built on h11 and wsproto (sans-I/O); no HTTP or websocket framing is written here.
"""

from __future__ import annotations

from typing import Any

from relhandler.runtime import gen_server
from relhandler.web._http import ClientDisconnected
from relhandler.web.config import ListenerConfig, parse_listener, parse_listeners
from relhandler.web.listener import acceptor_name, child_spec

__all__ = [
    "ClientDisconnected",
    "ListenerConfig",
    "acceptor_name",
    "child_spec",
    "parse_listener",
    "parse_listeners",
    "port",
]


async def port(app: str, listener: str) -> Any:
    """The port a running listener is bound to (useful with ``port = 0``)."""
    return await gen_server.call(acceptor_name(app, listener), "port")
