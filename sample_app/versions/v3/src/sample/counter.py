"""A counter GenServer. Version 3 keeps only the 5 most recent increments, as `recent`."""

from relhandler.runtime import gen_server, whereis

__vsn__ = "3"
KEEP = 5


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
    return ("ok", {"n": 0, "recent": []})


def handle_call(req, from_, state):
    if req == "incr":
        n = state["n"] + 1
        state = {**state, "n": n, "recent": (state["recent"] + [n])[-KEEP:]}
        return ("reply", n, state)
    if req == "get":
        return ("reply", state, state)
    if req == "describe":
        return ("reply", f"{state['n']} increments, recent {state['recent']}", state)
    return ("reply", ("error", "unknown"), state)


def handle_cast(msg, state):
    return ("noreply", state)


def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        # back to 2.0.0: the full history is gone; keep what we have as the history
        return ("ok", {"n": state["n"], "history": list(state["recent"])})
    return ("ok", {"n": state["n"], "recent": state["history"][-KEEP:]})
