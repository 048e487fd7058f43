"""A counter GenServer. Version 1 keeps only the count."""

__vsn__ = "1"

from relhandler.runtime import gen_server, whereis


def start_link():
    return gen_server.start_link(__name__, None, name="counter")


async def incr():
    return await gen_server.call("counter", "incr")


async def get():
    return await gen_server.call("counter", "get")


def pid():
    return str(whereis("counter"))


def init(args):
    return ("ok", {"n": 0})


def handle_call(req, from_, state):
    if req == "incr":
        state = {**state, "n": state["n"] + 1}
        return ("reply", state["n"], state)
    if req == "get":
        return ("reply", state, state)
    return ("reply", ("error", "unknown"), state)


def handle_cast(msg, state):
    return ("noreply", state)


def code_change(old_vsn, state, extra):
    return ("ok", state)
