"""The seed's greeter: a raw process looping through a *qualified* call.

`sample.greeter.loop()` goes through the live module, so after a new version is loaded the
next message is handled by the new code, from the same pid.
"""

import sample.greeter
from relhandler.runtime import receive, register, self_pid, send, spawn_link


def start_link():
    return spawn_link(_run)


async def _run():
    register("greeter")
    return sample.greeter.loop()


async def loop():
    msg = await receive()
    if msg[0] == "greet":
        _, name, reply_to = msg
        send(reply_to, ("greeting", sample.greeter.greeting(name)))
    return sample.greeter.loop()


def greeting(name):
    return f"Hello, {name}!"


async def greet(name):
    """Client API (run it with `relhandler rpc sample.greeter:greet '["Alice"]'`)."""
    send("greeter", ("greet", name, self_pid()))
    _, text = await receive(timeout=5, match=lambda m: m[0] == "greeting")
    return text


async def greet_anyone():
    """A greeting with no argument: the load hook of `relhandler verify` (pyproject.toml)."""
    return await greet("verify")


def pid():
    from relhandler.runtime import whereis

    return str(whereis("greeter"))
