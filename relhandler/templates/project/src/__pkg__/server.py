"""A GenServer: a counter that greets. State is plain data; code_change migrates it."""

from typing import TypedDict

from relhandler.runtime import current_node, gen_server


class State(TypedDict):
    """The server's state. An install checks every migrated state against the new
    version's State and refuses it, naming the field, when it does not match: give State a
    key, and code_change must add it."""

    count: int


def start_link():
    return gen_server.start_link(__name__, None, name="{{pkg}}_server")


# client API (call these with `relhandler rpc {{pkg}}.server:hello '["Ada"]'`)
async def hello(name):
    return await gen_server.call("{{pkg}}_server", ("hello", name))


async def count():
    return await gen_server.call("{{pkg}}_server", "count")


# callbacks
def init(args) -> tuple[str, State]:
    return ("ok", {"count": 0})


def handle_call(request, from_, state):
    if request == "count":
        return ("reply", state["count"], state)
    if isinstance(request, (tuple, list)) and request[0] == "hello":
        state = {**state, "count": state["count"] + 1}
        greeting = current_node().apps.get_env("{{pkg}}", "greeting", "Hello")
        return ("reply", f"{greeting}, {request[1]}!", state)
    return ("reply", ("error", "unknown_request"), state)


def handle_cast(msg, state):
    return ("noreply", state)


def code_change(old_vsn, state, extra):
    """Migrate a running process's state to this version's State (an upgrade from
    ``old_vsn``), or back to the older version's shape (a downgrade: ``("down", vsn)``)."""
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        return ("ok", {"count": state["count"]})  # only the keys the older version knows
    return ("ok", {"count": 0, **state})  # a default for each key the old state lacks
