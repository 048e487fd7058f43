"""Chat (echo) connections: one GenServer per TCP connection, under a simple_one_for_one
supervisor. The socket is *active*: lines arrive as messages, so between lines the process
sits in the generic loop and an upgrade changes its code without touching the socket. The
socket is linked to its process: if the process dies, the client sees the connection close."""

from relhandler.runtime import gen_server, sockets, supervisor


def start_conn_sup():
    return supervisor.start_link("sample.chat", "conn_sup", name="chat_sup")


# -- the connection supervisor's callbacks (this module is both; `args` tells which) --
def init(args):
    if args == "conn_sup":
        return (
            "ok",
            (
                {"strategy": "simple_one_for_one", "intensity": 100, "period": 1},
                [
                    {
                        "id": "conn",
                        "start": ("sample.chat", "start_conn", []),
                        "restart": "temporary",
                        "modules": ["sample.chat"],
                    }
                ],
            ),
        )
    reader, writer = args
    sock = sockets.wrap(reader, writer)  # owned by this process; lines, active
    return ("ok", {"sock": sock, "lines": 0})


def start_conn(reader, writer):
    return gen_server.start_link("sample.chat", (reader, writer))


def reply(line):
    return f"[v3] {line}"


def handle_info(msg, state):
    if msg[0] == "tcp":
        line = msg[2].decode().rstrip("\n")
        state["sock"].send((reply(line) + "\n").encode())
        return ("noreply", {**state, "lines": state["lines"] + 1})
    if msg[0] == "tcp_closed":
        return ("stop", "normal", state)
    return ("noreply", state)


def handle_call(req, from_, state):
    return ("reply", state["lines"], state)


def handle_cast(msg, state):
    return ("noreply", state)


def terminate(reason, state):
    if isinstance(state, dict) and "sock" in state:
        state["sock"].close()


def code_change(old_vsn, state, extra):
    return ("ok", state)
