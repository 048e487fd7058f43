"""A real node with its file-system calls wrapped: SIGKILL or ENOSPC at call N of one op.

    python -m tests.e2e.faultfs start --root ROOT        (any ``relhandler`` arguments)

Environment: ``FAULT_OP`` (a ReleaseHandler method: unpack, install, make_permanent, remove,
reboot_old; or ``deploy``, the CLI's own, run with no node), ``FAULT_VERSION`` (only the
call for this version is armed), ``FAULT_N`` (1-based call index), ``FAULT_MODE``
(``before``: SIGKILL right before call N; ``after``: right after it; ``enospc``: call N
raises ENOSPC) and ``FAULT_REPORT`` (a file: the number of calls the armed op made, written
when it returns). Only calls made while the op runs are counted, from any thread. Nothing in
relhandler knows about this: the wrapping happens here, in the test.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

WRAPPED = (
    (os, "replace"),
    (os, "rename"),
    (os, "fsync"),
    (os, "unlink"),
    (os, "remove"),
    (os, "rmdir"),
    (os, "mkdir"),
    (os, "write"),
    (tempfile, "mkstemp"),
    (tempfile, "mkdtemp"),
)


class Counter:
    def __init__(self, n: int, mode: str) -> None:
        self.n = n
        self.mode = mode
        self.calls = 0
        self.armed = False
        self.lock = threading.Lock()
        self.depth = threading.local()

    def hit(self) -> bool:
        """Count one call; True when it is call N."""
        with self.lock:
            if not self.armed:
                return False
            self.calls += 1
            return self.calls == self.n


def _wrap(c: Counter, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(real)
    def wrapper(*args: Any, **kw: Any) -> Any:
        # mkstemp/mkdtemp call os.open/os.mkdir inside: count the outer call only
        if getattr(c.depth, "n", 0):
            return real(*args, **kw)
        if not c.hit():
            c.depth.n = 1
            try:
                return real(*args, **kw)
            finally:
                c.depth.n = 0
        if c.mode == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        if c.mode == "enospc":
            path = args[0] if args and isinstance(args[0], str | os.PathLike) else None
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        c.depth.n = 1
        try:
            return real(*args, **kw)
        finally:
            # also when the call raised (an mkdir of an existing dir, an unlink of a gone
            # file: the caller expects those): the point is right after it, however it ended
            c.depth.n = 0
            os.kill(os.getpid(), signal.SIGKILL)

    return wrapper


def install(op: str, version: str | None, n: int, mode: str, report: str | None) -> Counter:
    from relhandler.handler.release_handler import ReleaseHandler

    c = Counter(n, mode)
    for mod, name in WRAPPED:
        setattr(mod, name, _wrap(c, name, getattr(mod, name)))
    assert shutil.rmtree  # rmtree reaches os.unlink/os.rmdir through the os module
    if op == "deploy":  # no node: the CLI's own call
        import relhandler.cli.build_cmds as cmds

        real_deploy = cmds.do_deploy

        @functools.wraps(real_deploy)
        def armed_deploy(*args: Any, **kw: Any) -> Any:
            c.armed = True
            try:
                return real_deploy(*args, **kw)
            finally:
                c.armed = False
                if report:
                    with open(report, "w") as f:
                        f.write(str(c.calls))

        cmds.do_deploy = armed_deploy
        return c
    real_op = getattr(ReleaseHandler, op)

    @functools.wraps(real_op)
    async def armed(self: ReleaseHandler, *args: Any, **kw: Any) -> Any:
        vsn = args[0] if args else None
        if version is not None and str(getattr(vsn, "name", vsn)) != version:
            return await real_op(self, *args, **kw)
        c.armed = True
        try:
            return await real_op(self, *args, **kw)
        finally:
            c.armed = False
            if report:
                with open(report, "w") as f:
                    f.write(str(c.calls))

    setattr(ReleaseHandler, op, armed)
    return c


def main() -> None:
    install(
        os.environ["FAULT_OP"],
        os.environ.get("FAULT_VERSION") or None,
        int(os.environ["FAULT_N"]),
        os.environ["FAULT_MODE"],
        os.environ.get("FAULT_REPORT"),
    )
    from relhandler.cli import main as cli_main

    sys.argv = ["relhandler", *sys.argv[1:]]
    cli_main()


if __name__ == "__main__":
    main()
