"""Active sockets: a stream's lines arrive as messages in the owning process's mailbox.

This is Erlang's ``{active, true}``: the process stays in its behaviour's generic loop between
messages (so it runs no module code while waiting, and upgrades never find it in old code),
and ``handle_info`` receives ``("tcp", sock_id, data)`` and finally ``("tcp_closed", sock_id)``.
The pump is runtime code, never hot-swapped.
"""

from __future__ import annotations

import asyncio
import itertools

from relhandler.runtime._kernel import Pid, current_node

__all__ = ["active"]

_ids = itertools.count(1)


def active(reader: asyncio.StreamReader, owner: Pid) -> int:
    """Forward each line read from ``reader`` to ``owner``; returns the socket id."""
    node = current_node()
    sock_id = next(_ids)

    async def pump() -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                node.send(owner, ("tcp", sock_id, line))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            node.send(owner, ("tcp_closed", sock_id))

    node.loop.create_task(pump())
    return sock_id
