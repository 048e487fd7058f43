"""Typed errors: a human message plus a stable machine ``code`` and an ``exit_code``.

This is the one place exit codes come from (cli.md): 0 done, 1 the operation failed,
2 bad usage or bad input, 3 node not reachable or not authenticated.

Tree::

    RelhandlerError
    ├── InputError (2)            bad input a user can fix: files, arguments
    │   ├── UsageError            bad command line
    │   ├── ConfigError           [tool.relhandler], app.toml, release.toml, sys.toml
    │   ├── AppupError            an appup file
    │   ├── RelupError            a relup file
    │   ├── TranslationError      systools_rc reasons (carries the OTP-shaped ``reason``)
    │   └── TarballError          a hostile, tampered or broken tarball
    ├── CodeError (1)             code server: load, purge
    │   ├── ModuleLoadError       syntax error / raised at import (file, line, traceback)
    │   ├── NotPurgedError        an old version still exists
    │   └── NoSuchModuleError     not a managed module / no file
    ├── ProcessError (1)          processes and behaviours
    │   ├── NoProcError           the process is not alive
    │   ├── CallTimeoutError      call() got no reply in time
    │   ├── CallExitError         the server died during call(); carries ``reason``
    │   ├── NotAProcessError      a process primitive called outside a process
    │   ├── SocketError           runtime.sockets: closed, not the owner, bad option
    │   └── SysError              sys protocol: suspend/resume/change_code failures
    ├── ReleaseError (1)          release handler refusals and failures
    │   ├── InstallError          install failed (rolled back in place, or not)
    │   └── ReleaseInputError (2) a release named or given that the node cannot take as is
    ├── ProtocolError (1)         a malformed control frame
    └── UnreachableError (3)      node not running / socket missing
        └── AuthError (3)         wrong or missing cookie
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AppupError",
    "AuthError",
    "CallExitError",
    "CallTimeoutError",
    "CodeError",
    "ConfigError",
    "InputError",
    "InstallError",
    "ModuleLoadError",
    "NoProcError",
    "NoSuchModuleError",
    "NotAProcessError",
    "NotPurgedError",
    "ProcessError",
    "ProtocolError",
    "ReleaseError",
    "ReleaseInputError",
    "RelhandlerError",
    "RelupError",
    "SocketError",
    "SysError",
    "TarballError",
    "TranslationError",
    "UnreachableError",
    "UsageError",
    "error_from_wire",
]


class RelhandlerError(Exception):
    """Base of every error relhandler raises on purpose.

    ``code`` is stable and machine-readable (it travels over the control socket and is printed
    by ``--json``); ``message`` is one line for a human, naming what was wrong and the fix.
    ``details`` holds JSON-able extra facts (file, line, pid, instruction index...).
    """

    code: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 1

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # per-instance refinement of the class code
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape used in control replies and ``--json`` output."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "exit_code": self.exit_code,
        }
        if self.hint:
            out["hint"] = self.hint
        if self.details:
            out["details"] = self.details
        return out


class InputError(RelhandlerError):
    """Bad input a user can fix (a file, an argument)."""

    code = "bad_input"
    exit_code = 2


class UsageError(InputError):
    code = "usage"


class ConfigError(InputError):
    code = "config"


class AppupError(InputError):
    code = "appup"


class RelupError(InputError):
    code = "relup"


class TranslationError(InputError):
    """A ``systools_rc`` translation error; ``reason`` is OTP's reason as a Python value."""

    code = "translate"

    def __init__(self, message: str, *, reason: Any, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reason = reason


class TarballError(InputError):
    code = "bad_tarball"


class CodeError(RelhandlerError):
    code = "code"


class ModuleLoadError(CodeError):
    code = "load_failed"


class NotPurgedError(CodeError):
    code = "not_purged"


class NoSuchModuleError(CodeError):
    code = "nofile"


class ProcessError(RelhandlerError):
    code = "process"


class NoProcError(ProcessError):
    code = "noproc"


class CallTimeoutError(ProcessError):
    code = "timeout"


class CallExitError(ProcessError):
    """The server exited before replying; ``reason`` is its exit reason."""

    code = "exit"

    def __init__(self, message: str, *, reason: Any, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reason = reason


class NotAProcessError(ProcessError):
    """``self_pid``, ``receive`` and the like called outside a process, e.g. in an asyncio
    task that a process created (a task is not a process)."""

    code = "not_a_process"


class SocketError(ProcessError):
    """A socket operation refused: ``closed``, ``not_owner``, ``einval`` (a bad option),
    ``emsgsize`` (a packet too big for its header)."""

    code = "socket"


class SysError(ProcessError):
    code = "sys"


class ReleaseError(RelhandlerError):
    code = "release"


class InstallError(ReleaseError):
    code = "install_failed"


class ReleaseInputError(ReleaseError, InputError):
    """A release the user named or gave that the node cannot take as it is: not unpacked,
    already there with other content, no relup for the path. Bad input (exit 2): nothing
    was changed, and the message says which command fixes it."""

    code = "release_input"


class ProtocolError(RelhandlerError):
    code = "protocol"


class UnreachableError(RelhandlerError):
    code = "unreachable"
    exit_code = 3


class AuthError(UnreachableError):
    code = "auth"


def _all_subclasses(cls: type[RelhandlerError]) -> list[type[RelhandlerError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def error_from_wire(err: dict[str, Any]) -> RelhandlerError:
    """Rebuild an error received over the control socket (client side).

    The class is the most specific one whose class-level ``code`` matches; the instance keeps
    the exact code and exit code the node sent.
    """
    code = str(err.get("code", "error"))
    message = str(err.get("message", "unknown error"))
    cls: type[RelhandlerError] = RelhandlerError
    for sub in _all_subclasses(RelhandlerError):
        if sub.__dict__.get("code") == code and sub not in (TranslationError, CallExitError):
            cls = sub
    exc = cls(message, code=code, hint=err.get("hint"), details=err.get("details"))
    exit_code = err.get("exit_code")
    if isinstance(exit_code, int) and exit_code != exc.exit_code:
        exc.exit_code = exit_code  # type: ignore[misc]  # keep what the node decided
    return exc
