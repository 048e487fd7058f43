"""A GenServer: a counter that greets. State is plain data; code_change migrates it."""

from relhandler.runtime import current_node, gen_server


def start_link():
    return gen_server.start_link(__name__, None, name="{{pkg}}_server")


# client API (call these with `relhandler rpc {{pkg}}.server:hello '["Ada"]'`)
async def hello(name):
    return await gen_server.call("{{pkg}}_server", ("hello", name))


async def count():
    return await gen_server.call("{{pkg}}_server", "count")


# callbacks
def init(args):
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
    return ("ok", state)
