"""A real node whose disk is full for its event log: every write to ``log/events.jsonl``
raises ENOSPC (other files are untouched).

    python -m tests.e2e.fullevents start --root ROOT        (any ``relhandler`` arguments)

Nothing in relhandler knows about this: the wrapping happens here, in the test.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any


def install() -> None:
    real_open, real_write = os.open, os.write
    full: set[int] = set()

    def open_(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        fd = real_open(path, flags, *args, **kw)
        if os.fspath(path).endswith("events.jsonl"):
            full.add(fd)
        else:
            full.discard(fd)  # a reused descriptor number
        return fd

    def write(fd: int, data: Any) -> int:
        if fd in full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    os.open = open_  # type: ignore[assignment]
    os.write = write


def main() -> None:
    install()
    from relhandler.cli import main as cli_main

    sys.argv = ["relhandler", *sys.argv[1:]]
    cli_main()


if __name__ == "__main__":
    main()
