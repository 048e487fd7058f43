"""New in 2.0.0: a stats server. The upgrade adds it to the top supervisor's specs and
starts it live (the appup cookbook's `update sample.sup supervisor` + `restart_child`)."""

import time

from relhandler.runtime import gen_server, whereis


def start_link():
    return gen_server.start_link(__name__, None, name="stats")


async def uptime():
    return await gen_server.call("stats", "uptime")


def pid():
    p = whereis("stats")
    return None if p is None else str(p)


def init(args):
    return ("ok", {"since": time.monotonic()})


def handle_call(req, from_, state):
    if req == "uptime":
        return ("reply", round(time.monotonic() - state["since"], 3), state)
    return ("reply", ("error", "unknown"), state)


def handle_cast(msg, state):
    return ("noreply", state)
