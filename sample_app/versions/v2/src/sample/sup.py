"""Top supervisor: greeter, counter, the chat connection supervisor, the chat listener,
the websocket chat room and its web listener, and (new in 2.0.0) the stats server."""

from relhandler import web


def init(args):
    flags = {"strategy": "one_for_one", "intensity": 10, "period": 10}
    children = [
        {
            "id": "greeter",
            "start": ("sample.greeter", "start_link", []),
            "modules": ["sample.greeter"],
        },
        {
            "id": "counter",
            "start": ("sample.counter", "start_link", []),
            "modules": ["sample.counter"],
        },
        {
            "id": "chat_sup",
            "start": ("sample.chat", "start_conn_sup", []),
            "type": "supervisor",
            "modules": ["sample.chat"],
        },
        {
            "id": "listener",
            "start": ("sample.listener", "start_link", []),
            "modules": ["sample.listener"],
        },
        {
            "id": "room",
            "start": ("sample.room", "start_link", []),
            "modules": ["sample.room"],
        },
        web.child_spec("sample"),  # the listeners of the app env: the websocket room
        {
            "id": "stats",
            "start": ("sample.stats", "start_link", []),
            "modules": ["sample.stats"],
        },
    ]
    return ("ok", (flags, children))
