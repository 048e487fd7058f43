"""The process world: processes, the two-version code server, behaviours, sys.

Knows nothing about releases; imports nothing above itself (see relhandler/__init__.py).
"""

from __future__ import annotations

import types

from relhandler.runtime import code as code
from relhandler.runtime import gen_event as gen_event
from relhandler.runtime import gen_server as gen_server
from relhandler.runtime import gen_statem as gen_statem
from relhandler.runtime import supervisor as supervisor
from relhandler.runtime import sys as sys
from relhandler.runtime import timers as timers
from relhandler.runtime._kernel import Node as Node
from relhandler.runtime._kernel import current_node as current_node
from relhandler.runtime.process import (
    Exit as Exit,
)
from relhandler.runtime.process import (
    Pid as Pid,
)
from relhandler.runtime.process import (
    ProcessInfo as ProcessInfo,
)
from relhandler.runtime.process import (
    ReceiveTimeout as ReceiveTimeout,
)
from relhandler.runtime.process import (
    Ref as Ref,
)
from relhandler.runtime.process import (
    demonitor as demonitor,
)
from relhandler.runtime.process import (
    exit as exit,
)
from relhandler.runtime.process import (
    forward as forward,
)
from relhandler.runtime.process import (
    link as link,
)
from relhandler.runtime.process import (
    monitor as monitor,
)
from relhandler.runtime.process import (
    process_info as process_info,
)
from relhandler.runtime.process import (
    receive as receive,
)
from relhandler.runtime.process import (
    register as register,
)
from relhandler.runtime.process import (
    registered as registered,
)
from relhandler.runtime.process import (
    self_pid as self_pid,
)
from relhandler.runtime.process import (
    send as send,
)
from relhandler.runtime.process import (
    spawn as spawn,
)
from relhandler.runtime.process import (
    spawn_link as spawn_link,
)
from relhandler.runtime.process import (
    spawn_monitor as spawn_monitor,
)
from relhandler.runtime.process import (
    trap_exit as trap_exit,
)
from relhandler.runtime.process import (
    unlink as unlink,
)
from relhandler.runtime.process import (
    unregister as unregister,
)
from relhandler.runtime.process import (
    whereis as whereis,
)
from relhandler.runtime.timers import cancel_timer as cancel_timer
from relhandler.runtime.timers import read_timer as read_timer
from relhandler.runtime.timers import send_after as send_after
from relhandler.runtime.timers import start_timer as start_timer

__all__ = [
    "Exit",
    "Node",
    "Pid",
    "ProcessInfo",
    "ReceiveTimeout",
    "Ref",
    "cancel_timer",
    "code",
    "current",
    "current_node",
    "demonitor",
    "exit",
    "gen_event",
    "gen_server",
    "gen_statem",
    "link",
    "monitor",
    "process_info",
    "read_timer",
    "receive",
    "register",
    "registered",
    "self_pid",
    "send",
    "send_after",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "start_timer",
    "supervisor",
    "sys",
    "timers",
    "trap_exit",
    "unlink",
    "unregister",
    "whereis",
]


def current(name: str) -> types.ModuleType:
    """The live module for ``name`` (the ``?MODULE:`` idiom: ``current(__name__).loop(n)``)."""
    return current_node().code.live(name)
