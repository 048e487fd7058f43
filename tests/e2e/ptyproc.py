"""A child process on a pseudo-terminal, driven like pexpect (stdlib only)."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import time
from collections.abc import Mapping, Sequence

__all__ = ["PtyProc"]


class PtyProc:
    """``argv`` run with a new pty as its controlling terminal (stdin, stdout, stderr)."""

    def __init__(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None
    ) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once (nothing else runs after a fork)
            try:
                if cwd is not None:
                    os.chdir(cwd)
                os.execve(argv[0], list(argv), dict(env))
            finally:
                os._exit(127)
        self.pid = pid
        self.fd = fd
        self.buffer = ""  # output not yet consumed by expect()
        self.transcript = ""  # everything the child wrote
        self.status: int | None = None

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def sendline(self, line: str) -> None:
        self.send(line + "\r")

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            raise EOFError
        text = data.decode(errors="replace").replace("\r\n", "\n")
        self.buffer += text
        self.transcript += text
        return True

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in the output; consume up to its end."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buffer)
            if m is not None:
                self.buffer = self.buffer[m.end() :]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {pattern!r} within {timeout}s; output so far:\n{self.transcript}"
                )
            try:
                self._read(min(left, 0.5))
            except EOFError:
                raise AssertionError(
                    f"the child ended before {pattern!r}; output:\n{self.transcript}"
                ) from None

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the child to exit (draining its output); its exit code."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the child did not exit; output:\n{self.transcript}")
            try:
                self._read(0.05)
            except EOFError:
                time.sleep(0.01)
        return self.status

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.status = -9
        os.close(self.fd)
