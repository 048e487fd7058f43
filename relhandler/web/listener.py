"""Listeners under an application's supervision tree.

For each listener of an application (its env key ``listeners``)::

    web (one_for_one)                      started by the app's supervisor: web.child_spec(app)
     └─ listener <name> (one_for_all)
         ├─ lifespan   ASGI lifespan startup/shutdown (ASGI listeners)
         ├─ conns      simple_one_for_one, child modules = [the app or handler module]
         │   └─ one process per connection (HTTP/ASGI, or a websocket behaviour GenServer)
         └─ acceptor   owns the listening socket (a GenServer, registered web:<app>:<name>)

All of it is runtime code (not managed modules), so an upgrade of the application never
restarts a listener or closes a connection; the release handler finds the connection
processes through ``conns``'s child spec, as it finds any other worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from relhandler.runtime import (
    current,
    current_node,
    gen_server,
    listenfds,
    receive,
    spawn_link,
    trap_exit,
)
from relhandler.runtime import supervisor as sup
from relhandler.runtime._kernel import current_process
from relhandler.web import websocket
from relhandler.web._http import drain, serve_connection
from relhandler.web.config import ListenerConfig, parse_listeners

__all__ = ["acceptor_name", "child_spec", "init", "start_link"]

log = logging.getLogger("relhandler.web")

LIFESPAN_TIMEOUT = 10.0
DRAIN_TIMEOUT = 5.0  # a stop waits this long for the HTTP requests under way


def acceptor_name(app: str, listener: str) -> str:
    """The registered name of a listener's acceptor (ask it ``"port"`` with a call)."""
    return f"web:{app}:{listener}"


def child_spec(app: str, *, id: str = "web") -> dict[str, Any]:
    """A child spec that starts every listener ``app`` declares (put it in your top
    supervisor's children)."""
    return {
        "id": id,
        "start": ("relhandler.web.listener", "start_link", [app]),
        "type": "supervisor",
        "modules": ["relhandler.web.listener"],
    }


async def start_link(app: str) -> Any:
    """Start the listeners of ``app`` (read from its env, checked) under one supervisor."""
    raw = current_node().apps.get_env(app, "listeners", [])
    cfgs = parse_listeners(raw, app)
    for cfg in cfgs:  # TLS files that do not load: a ConfigError here, not an acceptor crash
        cfg.ssl_context()
    return await sup.start_link("relhandler.web.listener", ("top", app, cfgs))


async def _start_listener(app: str, cfg: ListenerConfig) -> Any:
    return await sup.start_link("relhandler.web.listener", ("listener", app, cfg))


async def _start_conns(app: str, cfg: ListenerConfig, shared: dict[str, Any]) -> Any:
    return await sup.start_link(
        "relhandler.web.listener", ("conns", app, cfg, shared), name=_conns_name(app, cfg)
    )


def _conns_name(app: str, cfg: ListenerConfig) -> str:
    return f"web:{app}:{cfg.name}:conns"


def init(args: Any) -> Any:
    """The supervisors' init (this module is runtime code, so never upgraded)."""
    kind = args[0]
    if kind == "top":
        _, app, cfgs = args
        return (
            "ok",
            (
                {"strategy": "one_for_one", "intensity": 5, "period": 10},
                [
                    {
                        "id": cfg.name,
                        "start": ("relhandler.web.listener", "_start_listener", [app, cfg]),
                        "type": "supervisor",
                        "modules": ["relhandler.web.listener"],
                    }
                    for cfg in cfgs
                ],
            ),
        )
    if kind == "listener":
        _, app, cfg = args
        # the lifespan's state, and the live HTTP connections (drained by a stop)
        shared: dict[str, Any] = {"state": {}, "conns": set()}
        children = []
        if cfg.app is not None:
            children.append(
                {
                    "id": "lifespan",
                    "start": ("relhandler.web.listener", "_start_lifespan", [cfg, shared]),
                    "shutdown": LIFESPAN_TIMEOUT,  # seconds, as everywhere in the Python API
                    # a purge that kills it must not restart the listener (one_for_all)
                    "restart": "temporary",
                    "modules": [cfg.module],
                }
            )
        children += [
            {
                "id": "conns",
                "start": ("relhandler.web.listener", "_start_conns", [app, cfg, shared]),
                "type": "supervisor",
                "modules": ["relhandler.web.listener"],
            },
            {
                "id": "acceptor",
                "start": ("relhandler.web.listener", "_start_acceptor", [app, cfg, shared]),
                "shutdown": DRAIN_TIMEOUT + 2,  # its terminate drains the connections
                "modules": ["relhandler.web.listener"],
            },
        ]
        return ("ok", ({"strategy": "one_for_all", "intensity": 5, "period": 10}, children))
    if kind == "conns":
        _, app, cfg, shared = args
        return (
            "ok",
            (
                {"strategy": "simple_one_for_one", "intensity": 0, "period": 1},
                [
                    {
                        "id": "conn",
                        "start": ("relhandler.web.listener", "_start_conn", [cfg, shared]),
                        "restart": "temporary",
                        # a timeout, not brutal_kill: a simple_one_for_one supervisor sends
                        # its children `shutdown` at termination (OTP) and kills them only
                        # after this; they trap exits, so terminate sends the close frame
                        "shutdown": 5.0,
                        "modules": [cfg.module],
                    }
                ],
            ),
        )
    raise ValueError(f"unknown web supervisor {kind!r}")


def _start_conn(
    cfg: ListenerConfig,
    shared: dict[str, Any],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> Any:
    if cfg.handler is not None:
        return websocket.start_link(reader, writer, cfg)
    return spawn_link(serve_connection, reader, writer, cfg, shared)


# -- the acceptor -------------------------------------------------------------------------


class _Acceptor:
    """gen_server callbacks of the process that owns the listening socket."""

    @staticmethod
    async def init(args: tuple[str, ListenerConfig, dict[str, Any]]) -> Any:
        app, cfg, shared = args
        trap_exit(True)  # so a stopping supervisor runs terminate: the socket is closed
        conns = _conns_name(app, cfg)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                r = await sup.start_child(conns, [reader, writer])
            except Exception:
                log.exception("listener %s: cannot start a connection process", cfg.name)
                writer.close()
                return
            if not (isinstance(r, tuple) and r[0] == "ok"):
                log.error("listener %s: connection process not started: %r", cfg.name, r)
                writer.close()

        # after a restart the node before it may have left this address listening
        inherited = listenfds.registry.adopt_tcp(cfg.host, cfg.port) if cfg.port else None
        where: dict[str, Any] = {"sock": inherited} if inherited else {"host": cfg.host}
        if not inherited:
            where["port"] = cfg.port
        server = await asyncio.start_server(
            on_connect,
            **where,
            ssl=cfg.ssl_context(),
            backlog=cfg.backlog,
            limit=cfg.high_water,
        )
        socks = server.sockets
        held = None
        if len(socks) == 1:  # handed to the node a restart execs (listenfds)
            key = listenfds.tcp_key(socks[0].family, cfg.host, cfg.port)
            held = listenfds.registry.hold(socks[0].fileno(), key)
            me = current_process()
            if me is not None:  # a kill skips terminate: the exit still releases it
                me.add_watcher(lambda reason: listenfds.registry.release(held))
        port = socks[0].getsockname()[1]
        log.info("listener %s of %s on %s:%s", cfg.name, app, cfg.host, port)
        state = {"server": server, "port": port, "host": cfg.host, "held": held}
        return ("ok", {**state, "conns": shared["conns"]})

    @staticmethod
    def handle_call(req: Any, from_: Any, state: Any) -> Any:
        if req == "port":
            return ("reply", state["port"], state)
        return ("reply", ("error", "unknown_call"), state)

    @staticmethod
    def handle_cast(msg: Any, state: Any) -> Any:
        return ("noreply", state)

    @staticmethod
    def handle_info(msg: Any, state: Any) -> Any:
        return ("noreply", state)

    @staticmethod
    async def terminate(reason: Any, state: Any) -> None:
        # stop accepting first, then drain the HTTP connections (uvicorn's graceful
        # shutdown); the connection supervisor ends what is left after this
        state["server"].close()
        listenfds.registry.release(state.get("held"))
        await drain(state["conns"], DRAIN_TIMEOUT)

    @staticmethod
    def code_change(old_vsn: Any, state: Any, extra: Any) -> Any:
        return ("ok", state)


def _start_acceptor(app: str, cfg: ListenerConfig, shared: dict[str, Any]) -> Any:
    return gen_server._start(
        "relhandler.web.listener",
        (app, cfg, shared),
        name=acceptor_name(app, cfg.name),
        link=True,
        timeout=None,
        callbacks=_Acceptor,
    )


# -- ASGI lifespan --------------------------------------------------------------------------


async def _start_lifespan(cfg: ListenerConfig, shared: dict[str, Any]) -> Any:
    node = current_node()
    ready: asyncio.Future[Any] = node.loop.create_future()
    pid = spawn_link(_lifespan_main, cfg, shared, ready)

    def exited(reason: Any) -> None:
        if not ready.done():
            ready.set_result(f"lifespan of {cfg.module} exited before startup: {reason!r}")

    node.processes[pid].add_watcher(exited)
    r = await ready
    if r != "ok":
        return ("error", r)
    return ("ok", pid)


async def _lifespan_main(
    cfg: ListenerConfig, shared: dict[str, Any], ready: asyncio.Future[Any]
) -> None:
    """Run the app's lifespan: startup before the listener accepts, shutdown after it and
    every connection stopped (uvicorn's ``lifespan="auto"``: an app that raises on the
    lifespan scope before starting up simply has none)."""
    trap_exit(True)
    loop = asyncio.get_running_loop()
    app = getattr(current(cfg.module), cfg.attr)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})
    shut: asyncio.Future[None] = loop.create_future()

    async def recv() -> dict[str, Any]:
        return await inbox.get()

    async def send(msg: dict[str, Any]) -> None:
        t = msg["type"]
        if t == "lifespan.startup.complete" and not ready.done():
            ready.set_result("ok")
        elif t == "lifespan.startup.failed" and not ready.done():
            ready.set_result(f"lifespan startup failed: {msg.get('message', '')}")
        elif t.startswith("lifespan.shutdown") and not shut.done():
            shut.set_result(None)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
    scope["state"] = shared["state"]
    task = loop.create_task(app(scope, recv, send))
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        exc = task.exception() if not task.cancelled() else None
        log.info("listener %s: app has no lifespan (%r)", cfg.name, exc)
        ready.set_result("ok")
    if ready.result() != "ok":
        return  # the start function reports the failure
    while True:
        msg = await receive()
        if isinstance(msg, tuple) and msg[0] == "EXIT":
            break
    if not task.done():
        inbox.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait([task, shut], timeout=LIFESPAN_TIMEOUT)
    if not task.done():
        task.cancel()
