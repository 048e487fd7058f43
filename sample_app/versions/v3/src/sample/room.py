"""The websocket chat room: its members and its history, kept by one GenServer.

No version changes this module, so an upgrade leaves the process alone: the history and
the membership survive every install. The connections (``sample.wschat``) change code.
"""

from relhandler.runtime import gen_server, monitor, self_pid, send, whereis

KEEP = 50  # lines of history the room remembers


def start_link():
    return gen_server.start_link(__name__, None, name="room")


async def join():
    """Make the calling connection process a member (it gets everyone else's lines)."""
    return await gen_server.call("room", ("join", self_pid()))


async def post(nick, text):
    """Add a line to the history and pass it to the other members; returns its number."""
    return await gen_server.call("room", ("post", self_pid(), nick, text))


async def history():
    return await gen_server.call("room", "history")


def pid():
    return str(whereis("room"))


def init(args):
    return ("ok", {"seq": 0, "history": [], "members": {}})


def handle_call(req, from_, state):
    if req == "history":
        return ("reply", list(state["history"]), state)
    if req[0] == "join":
        member = req[1]
        return ("reply", "ok", {**state, "members": {**state["members"], member: monitor(member)}})
    if req[0] == "post":
        _, sender, nick, text = req
        seq = state["seq"] + 1
        for member in state["members"]:
            if member != sender:
                send(member, ("said", seq, nick, text))
        history = [*state["history"], f"#{seq} {nick}: {text}"][-KEEP:]
        return ("reply", seq, {**state, "seq": seq, "history": history})
    return ("reply", ("error", "unknown"), state)


def handle_cast(msg, state):
    return ("noreply", state)


def handle_info(msg, state):
    if msg[0] == "DOWN":  # a connection closed: it leaves the room
        members = {p: r for p, r in state["members"].items() if p != msg[3]}
        return ("noreply", {**state, "members": members})
    return ("noreply", state)


def code_change(old_vsn, state, extra):
    return ("ok", state)
