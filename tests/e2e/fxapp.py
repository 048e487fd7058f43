"""A small application used by the e2e tests: a supervisor, a counter gen_server, an api."""

from __future__ import annotations

from tests.fixtures.mkroot import App

COUNTER = """
from relhandler.runtime import gen_server

GREETING = "{greeting}"


def start_link():
    return gen_server.start_link(__name__, None, name="fx_counter")


def init(args):
    from relhandler.runtime import trap_exit
    trap_exit(True)  # so a shutdown from the supervisor runs terminate (as in OTP)
    return ("ok", {{"n": 0}})


def handle_call(req, from_, state):
    if req == "get":
        return ("reply", state, state)
    if req == "incr":
        state = {{**state, "n": state["n"] + 1}}
        return ("reply", state["n"], state)
    if req[0] == "greet":
        return ("reply", f"{{GREETING}}, {{req[1]}}!", state)
    return ("reply", "unknown", state)


def handle_cast(msg, state):
    return ("noreply", state)


def terminate(reason, state):
    from relhandler.runtime import current_node
    path = current_node().apps.get_env("fx_app", "terminate_file")
    if path:
        with open(path, "a") as f:
            f.write(f"terminated {{reason}} n={{state['n']}}\\n")
"""

FILES = {
    "fx_app/__init__.py": "",
    "fx_app/app.py": """
from relhandler.runtime import supervisor

async def start():
    return await supervisor.start_link("fx_app.sup", None, name="fx_sup")
""",
    "fx_app/sup.py": """
def init(args):
    return ("ok", ({"strategy": "one_for_one", "intensity": 5, "period": 10}, [
        {"id": "counter", "start": ("fx_app.counter", "start_link", []),
         "modules": ["fx_app.counter"]},
    ]))
""",
    "fx_app/api.py": """
from relhandler.runtime import gen_server, whereis

async def greet(name):
    return await gen_server.call("fx_counter", ("greet", name))

async def incr():
    return await gen_server.call("fx_counter", "incr")

async def get():
    return await gen_server.call("fx_counter", "get")

def counter_pid():
    return str(whereis("fx_counter"))

def kill_top_supervisor():
    from relhandler.runtime import exit
    exit(whereis("fx_sup"), "kill")
    return "killed"
""",
}


def fx_app(version: str = "1.0.0", greeting: str = "Hello", **env: object) -> App:
    files = dict(FILES)
    files["fx_app/counter.py"] = COUNTER.format(greeting=greeting)
    return App("fx_app", version, files, start="fx_app.app:start", env=env)
