"""A GenServer holding the visit count: state that outlives every upgrade of the web code."""

from relhandler.runtime import gen_server


def start_link():
    return gen_server.start_link(__name__, None, name="{{pkg}}_visits")


async def visit():
    return await gen_server.call("{{pkg}}_visits", "visit")


def init(args):
    return ("ok", {"visits": 0})


def handle_call(req, from_, state):
    if req == "visit":
        state = {**state, "visits": state["visits"] + 1}
        return ("reply", state["visits"], state)
    return ("reply", None, state)


def handle_cast(msg, state):
    return ("noreply", state)


def code_change(old_vsn, state, extra):
    return ("ok", state)
