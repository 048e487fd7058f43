"""The websocket endpoint's loop. Keep this module unchanged between versions: a loop that
is running is never old code then, so no upgrade and no purge closes its connection.

Each answer is a call into the live module (`current("{{pkg}}.web").reply`, Erlang's
`?MODULE:reply`): it runs the current version of web.py, so an open websocket answers in
the new version, its per-connection counter kept.
"""

from relhandler.runtime import current


async def echo(websocket):
    await websocket.accept()
    n = 0  # per-connection state: lives as long as the connection, across upgrades
    async for text in websocket.iter_text():
        n += 1
        await websocket.send_text(current("{{pkg}}.web").reply(n, text))
