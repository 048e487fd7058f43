"""The chat listener: owns the listening socket, starts a connection process per client."""

import asyncio

from relhandler.runtime import current_node, gen_server, supervisor


def start_link():
    return gen_server.start_link(__name__, None, name="chat_listener")


async def init(args):
    port = current_node().apps.get_env("sample", "chat_port", 0)

    async def on_connect(reader, writer):
        await supervisor.start_child("chat_sup", [reader, writer])

    server = await asyncio.start_server(on_connect, "127.0.0.1", port)
    return ("ok", {"server": server, "port": server.sockets[0].getsockname()[1]})


def handle_call(req, from_, state):
    if req == "port":
        return ("reply", state["port"], state)
    return ("reply", None, state)


def handle_cast(msg, state):
    return ("noreply", state)


def terminate(reason, state):
    state["server"].close()


async def port():
    return await gen_server.call("chat_listener", "port")
