"""A counter GenServer. Version 2 adds a history of increments (migrated in code_change)."""

import sample.history
from relhandler.runtime import gen_server, whereis

__vsn__ = "2"


def start_link():
    return gen_server.start_link(__name__, None, name="counter")


async def incr():
    return await gen_server.call("counter", "incr")


async def get():
    return await gen_server.call("counter", "get")


async def describe():
    return await gen_server.call("counter", "describe")


def pid():
    return str(whereis("counter"))


def init(args):
    return ("ok", {"n": 0, "history": []})


def handle_call(req, from_, state):
    if req == "incr":
        n = state["n"] + 1
        state = {**state, "n": n, "history": state["history"] + [n]}
        return ("reply", n, state)
    if req == "get":
        return ("reply", state, state)
    if req == "describe":
        return ("reply", sample.history.describe(state["history"]), state)
    return ("reply", ("error", "unknown"), state)


def handle_cast(msg, state):
    return ("noreply", state)


def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        # back to 1.0.0: drop the history
        return ("ok", {"n": state["n"]})
    # from 1.0.0: start the history with what the appup passes in `extra`
    return ("ok", {**state, "history": list(extra.get("default_history", []))})
