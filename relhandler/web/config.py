"""Listener configuration: what an application declares under its env key ``listeners``.

Defaults follow uvicorn's (keep-alive 5 s, 16 KiB of request head, 16 MiB websocket
messages, a websocket ping every 20 s answered within 20 s, backlog 2048, 64 KiB read
high-water mark); ``header_timeout`` is ours (uvicorn has
none, so a slowloris client holds a connection forever there).
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relhandler.errors import ConfigError

__all__ = ["ListenerConfig", "parse_listener", "parse_listeners"]


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listening socket and what serves its connections.

    Exactly one of ``app`` (an ASGI 3 application, ``"module:attr"``, looked up on the
    module's current version for every request) or ``handler`` (a websocket behaviour
    module, see ``relhandler.web.websocket``) is set.
    """

    name: str
    host: str = "127.0.0.1"
    port: int = 0
    app: str | None = None
    handler: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keep_alive_timeout: float = 5.0
    header_timeout: float = 5.0
    max_header_bytes: int = 16 * 1024
    high_water: int = 64 * 1024
    ws_max_size: int = 16 * 1024 * 1024
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    backlog: int = 2048
    root_path: str = ""

    @property
    def module(self) -> str:
        """The managed module the listener serves (the connections' child-spec module)."""
        if self.app is not None:
            return self.app.split(":", 1)[0]
        assert self.handler is not None
        return self.handler

    @property
    def attr(self) -> str:
        """The ASGI app's attribute in ``module`` (default ``app``)."""
        if self.app is None or ":" not in self.app:
            return "app"
        return self.app.split(":", 1)[1]

    def ssl_context(self) -> ssl.SSLContext | None:
        """A server TLS context from ``certfile``/``keyfile`` (stdlib ``ssl``), or None."""
        if self.certfile is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"listener {self.name!r}: cannot load certfile/keyfile "
                f"{self.certfile!r}/{self.keyfile!r}: {e}; check both paths (PEM files)",
                code="web_tls",
            ) from e
        return ctx


_FIELDS = {f.name: f for f in dataclasses.fields(ListenerConfig)}
_NUMBERS = {
    "keep_alive_timeout",
    "header_timeout",
    "max_header_bytes",
    "high_water",
    "ws_max_size",
    "ws_ping_interval",
    "ws_ping_timeout",
    "backlog",
    "port",
}


def _bad(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}", code="web_listener")


def parse_listener(raw: Any, where: str = "listener") -> ListenerConfig:
    """Check one listener table; a ``ConfigError`` names the field and the fix."""
    if not isinstance(raw, Mapping):
        raise _bad(where, f"must be a table, got {raw!r}")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise _bad(where, f"unknown keys {unknown}; known: {', '.join(sorted(_FIELDS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(where, "needs a 'name' (a non-empty string)")
    where = f"{where} {name!r}"
    app, handler = raw.get("app"), raw.get("handler")
    if (app is None) == (handler is None):
        raise _bad(where, "set exactly one of 'app' (\"module:attr\", ASGI) or 'handler'")
    for key, val in (("app", app), ("handler", handler)):
        if val is not None and (not isinstance(val, str) or not val.split(":")[0]):
            raise _bad(where, f"'{key}' must be a module name string, got {val!r}")
    for key in _NUMBERS:
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise _bad(where, f"'{key}' must be a non-negative number, got {v!r}")
    port = raw.get("port", 0)
    if not isinstance(port, int) or port > 65535:
        raise _bad(where, f"'port' must be an integer 0..65535, got {port!r}")
    for key in ("host", "certfile", "keyfile", "root_path"):
        if key in raw and not isinstance(raw[key], str):
            raise _bad(where, f"'{key}' must be a string, got {raw[key]!r}")
    if ("certfile" in raw) != ("keyfile" in raw):
        raise _bad(where, "TLS needs both 'certfile' and 'keyfile'")
    return ListenerConfig(**dict(raw))


def parse_listeners(raw: Any, app: str) -> tuple[ListenerConfig, ...]:
    """The ``listeners`` env value of application ``app`` (a list of tables)."""
    where = f"application {app!r} env 'listeners'"
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise _bad(where, f"must be a list of tables, got {raw!r}")
    out = tuple(parse_listener(r, f"{where}[{i}]") for i, r in enumerate(raw))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise _bad(where, f"duplicate listener names in {names}")
    return out
