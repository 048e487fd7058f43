"""The node side of ``relhandler console``: Python evaluated inside the running node.

This is remote code execution by design. It is the control op ``console``, so it is exactly
as protected as ``install``: only a client that proved it holds the cookie reaches it.

A *session* (``open``) is a namespace kept on the node until the connection that opened it
closes, and a *shell process* that evaluates the session's inputs one at a time, as Erlang's
shell evaluator does: ``self_pid()``, ``receive()`` and the mailbox persist from one input to
the next. Each input is compiled with top-level ``await`` allowed and runs in the shell
process (a task of its own on the node's loop), never in the control server's task: an input
that raises returns its traceback, one that runs long holds only its own session, and one
that kills the shell process (``exit(self_pid(), "kill")``, an interrupt) gets a fresh shell
process at the next input, with the namespace kept. What an input prints on stdout/stderr is
captured for that input alone (a per-context redirect: other processes' output is untouched)
and sent back with its result.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextvars
import inspect
import io
import linecache
import os
import re
import rlcompleter
import secrets
import sys
import traceback
import types
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relhandler.control.server import current_connection
from relhandler.errors import UsageError
from relhandler.handler.reload import ReloadReport, reload_module
from relhandler.runtime import (
    Exit,
    Node,
    Pid,
    current,
    gen_server,
    receive,
    registered,
    self_pid,
    send,
    spawn,
    whereis,
)
from relhandler.runtime import sys as rsys
from relhandler.runtime.code import LiveModule, ModuleInfo, parse_source

if TYPE_CHECKING:
    from relhandler.control.daemon import NodeMain
    from relhandler.control.server import Op, Progress

__all__ = ["MAX_TEXT", "SCOPE", "Consoles", "make_op"]

MAX_TEXT = 200_000
"""Characters of captured output, of a value's repr or of a traceback sent back per input."""

SCOPE = (
    "call",
    "cast",
    "send",
    "whereis",
    "process_info",
    "which",
    "get_state",
    "reload",
    "self_pid",
    "receive",
    "spawn",
    "registered",
    "pid",
    "current",
    "node",
)
"""The helpers every session starts with (besides the loaded modules, by top-level name)."""

_PID_TEXT = re.compile(r"^<\d+\.\d+\.\d+>$")
_HERE = os.path.normcase(os.path.abspath(__file__))


@dataclass(eq=False)
class _Sink:
    """Where one input's output goes while it runs (``open`` False once it has ended: a
    process or task it started, which inherited the context, then prints to the node's own
    output instead of a buffer nobody reads)."""

    out: io.StringIO = field(default_factory=io.StringIO)
    err: io.StringIO = field(default_factory=io.StringIO)
    open: bool = True


# the sink of the input running in this context (inherited by what it spawns), if any
_capture: ContextVar[_Sink | None] = ContextVar("relhandler_console_capture", default=None)


def _sink() -> _Sink | None:
    s = _capture.get()
    return s if s is not None and s.open else None


class _Redirect:
    """``sys.stdout``/``sys.stderr`` while consoles are open: writes from a context that
    runs a console input go to that input's buffer, every other write to the real stream."""

    def __init__(self, real: Any, index: int) -> None:
        self._real = real
        self._index = index

    def write(self, s: str) -> int:
        sink = _sink()
        if sink is None:
            return int(self._real.write(s))
        return (sink.err if self._index else sink.out).write(s)

    def flush(self) -> None:
        if _sink() is None:
            self._real.flush()

    def isatty(self) -> bool:
        return False if _sink() is not None else bool(self._real.isatty())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _install_redirect() -> None:
    if not isinstance(sys.stdout, _Redirect):
        sys.stdout = _Redirect(sys.stdout, 0)
    if not isinstance(sys.stderr, _Redirect):
        sys.stderr = _Redirect(sys.stderr, 1)


def _remove_redirect() -> None:
    for attr in ("stdout", "stderr"):
        s = getattr(sys, attr)
        if isinstance(s, _Redirect):
            setattr(sys, attr, s._real)


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"\n... ({len(text) - MAX_TEXT} more characters not shown)\n"


class _Leave(BaseException):
    """``exit()``/``quit()`` typed in the console: leave it (the node keeps running)."""


class _Quitter:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Use {self.name}() or Ctrl-D to leave the console (the node keeps running)"

    def __call__(self, code: Any = None) -> None:
        raise _Leave()


def _target(x: Any) -> Any:
    """A pid, a registered name, or a pid as text (``"<0.85.0>"``)."""
    if isinstance(x, str) and _PID_TEXT.match(x):
        return Pid.parse(x)
    return x


def _helpers(node: Node, reload: Callable[..., Any] | None) -> dict[str, Any]:
    async def call(server: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """``gen_server.call`` (a pid, a registered name or ``"<0.85.0>"``)."""
        return await gen_server.call(_target(server), request, timeout)

    def cast(server: Any, msg: Any) -> None:
        """``gen_server.cast``."""
        gen_server.cast(_target(server), msg)

    def send_(dest: Any, msg: Any) -> None:
        """Send ``msg`` to a pid or a registered name."""
        send(_target(dest), msg)

    def process_info(x: Any) -> Any:
        """A snapshot of a process (a pid, a registered name or ``"<0.85.0>"``)."""
        t = _target(x)
        p = whereis(t) if isinstance(t, str) else t
        return None if p is None else node.info(p)

    def which(module: Any) -> ModuleInfo:
        """Which version of a module is current (and old), and the files they came from."""
        name = module if isinstance(module, str) else getattr(module, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"which() takes a module or its dotted name, not {module!r}")
        return node.code.which(name)

    async def get_state(x: Any, timeout: float | None = 5.0) -> Any:
        """The state of a behaviour process (``sys:get_state``)."""
        return await rsys.get_state(_target(x), timeout)

    def pid(text: str) -> Pid:
        """``"<0.85.0>"`` as a Pid."""
        return Pid.parse(text)

    h: dict[str, Any] = {
        "call": call,
        "cast": cast,
        "send": send_,
        "whereis": whereis,
        "process_info": process_info,
        "which": which,
        "get_state": get_state,
        "self_pid": self_pid,
        "receive": receive,
        "spawn": spawn,
        "registered": registered,
        "pid": pid,
        "current": current,
        "node": node,
        "exit": _Quitter("exit"),
        "quit": _Quitter("quit"),
    }
    if reload is not None:
        h["reload"] = reload
    return h


@dataclass(eq=False)
class _Job:
    source: str
    fut: asyncio.Future[dict[str, Any]]
    sink: _Sink = field(default_factory=_Sink)


@dataclass(eq=False)
class _Session:
    sid: str
    ns: dict[str, Any]
    jobs: asyncio.Queue[_Job] = field(default_factory=asyncio.Queue)
    shell: Pid | None = None
    running: _Job | None = None
    inputs: int = 0
    bound: set[str] = field(default_factory=set)  # names we bound to loaded modules
    notes: list[str] = field(default_factory=list)


def _strip_own_frames(e: BaseException) -> str:
    tb = e.__traceback__
    while tb is not None and os.path.normcase(tb.tb_frame.f_code.co_filename) == _HERE:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


async def _run_source(source: str, filename: str, ns: dict[str, Any]) -> Any:
    """Run ``source`` in ``ns``; the value of its last statement if that is an expression."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = parse_source(source, filename)
    last: ast.Expression | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        del tree.body[-1]
    if tree.body:
        code = compile(tree, filename, "exec", flags=flags, dont_inherit=True)
        r = types.FunctionType(code, ns)()
        if code.co_flags & inspect.CO_COROUTINE:
            await r
    if last is None:
        return None
    code = compile(last, filename, "eval", flags=flags, dont_inherit=True)
    value = types.FunctionType(code, ns)()
    if code.co_flags & inspect.CO_COROUTINE:
        value = await value
    if inspect.iscoroutine(value):
        # `get_state("counter")` typed without `await`: a console has nothing better to
        # do with a coroutine than run it (IPython's autoawait does the same)
        value = await value
    return value


class Consoles:
    """The node's console sessions (one per ``open``), dropped when their client goes."""

    def __init__(self, node: Node, reload: Callable[..., Any] | None = None) -> None:
        self.node = node
        self.reload = reload
        self.sessions: dict[str, _Session] = {}

    # -- sessions -----------------------------------------------------------------
    def open(self) -> dict[str, Any]:
        sid = secrets.token_hex(8)
        ns: dict[str, Any] = {"__name__": "__console__", "__builtins__": builtins}
        ns.update(_helpers(self.node, self.reload))
        s = _Session(sid, ns)
        self.sessions[sid] = s
        _install_redirect()
        conn = current_connection()
        if conn is not None:
            conn.on_close(lambda: self.close(sid))
        self._bind_modules(s)
        self._ensure_shell(s)
        return {
            "session": sid,
            "shell": str(s.shell),
            "node": self.node.name,
            "os_pid": os.getpid(),
            "scope": [n for n in SCOPE if n in ns],
            "modules": sorted(s.bound),
        }

    def close(self, sid: str) -> None:
        """Drop a session: its namespace and its shell process (killed if alive)."""
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        self._kill_shell(s, "killed")
        s.ns.clear()
        if not self.sessions:
            _remove_redirect()

    def _session(self, args: dict[str, Any]) -> _Session:
        sid = args.get("session")
        s = self.sessions.get(sid) if isinstance(sid, str) else None
        if s is None:
            raise UsageError(
                f"no console session {sid!r} on this node (it ended with its connection); "
                "open one with `relhandler console`",
                code="no_session",
            )
        return s

    def _bind_modules(self, s: _Session) -> None:
        """Bind each loaded managed module's top-level package by name (a live handle:
        ``sample.greeter`` is always the current version), unless the user rebound it."""
        code = self.node.code
        for name in code.all_loaded():
            top = name.partition(".")[0]
            free = top not in s.ns or (top in s.bound and isinstance(s.ns[top], LiveModule))
            if free and code.is_loaded(top):
                s.ns[top] = code.live(top)
                s.bound.add(top)

    # -- the shell process ----------------------------------------------------------
    def _ensure_shell(self, s: _Session) -> Pid:
        if s.shell is not None and self.node.resolve(s.shell) is not None:
            return s.shell
        pid = self.node.spawn(self._shell_loop, s, initial_call="console:shell")
        s.shell = pid
        p = self.node.processes[pid]
        p.add_watcher(lambda reason: self._shell_exited(s, pid, reason))
        return pid

    def _kill_shell(self, s: _Session, reason: str) -> None:
        if s.shell is None:
            return
        p = self.node.resolve(s.shell)
        if p is not None:
            self.node._kill(p, reason)

    def _shell_exited(self, s: _Session, pid: Pid, reason: Any) -> None:
        if s.shell == pid:
            s.shell = None
        job, s.running = s.running, None
        if self.sessions.get(s.sid) is not s or reason == "interrupted":
            return  # a closed session, or an interrupt (its reply said so)
        note = f"the shell process {pid} exited ({reason!r}); the next input gets a new one"
        if job is not None and not job.fut.done():
            job.fut.set_result(
                {
                    "value": None,
                    "stdout": _clip(job.sink.out.getvalue()),
                    "stderr": _clip(job.sink.err.getvalue()),
                    "error": f"{note}\n",
                    "error_type": "ShellExit",
                    "shell": str(pid),
                    "notes": [],
                }
            )
        else:
            s.notes.append(note)

    async def _shell_loop(self, s: _Session) -> None:
        while True:
            job = await s.jobs.get()
            if job.fut.done():
                continue
            s.running = job
            result = await self._evaluate(s, job)
            s.running = None
            if not job.fut.done():
                job.fut.set_result(result)

    async def _evaluate(self, s: _Session, job: _Job) -> dict[str, Any]:
        s.inputs += 1
        filename = f"<console#{s.inputs}>"
        # tracebacks quote the console's lines as they quote a file's
        linecache.cache[filename] = (len(job.source), None, job.source.splitlines(True), filename)
        _install_redirect()  # again: something may have replaced sys.stdout since open
        token = _capture.set(job.sink)
        value_repr: str | None = None
        error: str | None = None
        error_type: str | None = None
        leave = False
        try:
            value = await _run_source(job.source, filename, s.ns)
            if value is not None:
                s.ns["_"] = value
                value_repr = repr(value)
        except _Leave:
            leave = True
        except (asyncio.CancelledError, Exit):
            raise  # the shell process is killed, or exits (Erlang's shell: the same)
        except BaseException as e:
            me = self.node.resolve(s.shell) if s.shell is not None else None
            if me is not None and me._kill_reason is not None:
                raise  # exit(self_pid(), ...) ends the shell process, as it would any
            error = _strip_own_frames(e)
            error_type = type(e).__name__
        finally:
            job.sink.open = False
            _capture.reset(token)
        return {
            "value": None if value_repr is None else _clip(value_repr),
            "stdout": _clip(job.sink.out.getvalue()),
            "stderr": _clip(job.sink.err.getvalue()),
            "error": None if error is None else _clip(error),
            "error_type": error_type,
            "shell": str(s.shell),
            "leave": leave,
            "notes": [],
        }

    # -- actions --------------------------------------------------------------------
    async def eval(self, args: dict[str, Any]) -> dict[str, Any]:
        s = self._session(args)
        source = args.get("source")
        if not isinstance(source, str):
            raise UsageError("console eval needs 'source': the Python text to evaluate")
        if s.running is not None:
            raise UsageError("this console session is still evaluating an input")
        notes, s.notes = s.notes, []
        self._bind_modules(s)
        self._ensure_shell(s)
        job = _Job(source, self.node.loop.create_future())
        s.jobs.put_nowait(job)
        conn = current_connection()
        while not job.fut.done():
            await asyncio.wait({job.fut}, timeout=0.25)
            if not job.fut.done() and conn is not None and conn.peer_closed():
                # the client is gone mid-input: end the input with its session
                self.close(s.sid)
                return {"error": "the console client went away\n"}
        result = job.fut.result()
        result["notes"] = notes + result.get("notes", [])
        return result

    def interrupt(self, args: dict[str, Any]) -> dict[str, Any]:
        """Ctrl-C: kill the shell process running an input (the namespace is kept)."""
        s = self._session(args)
        if s.running is None:
            return {"interrupted": False}
        job = s.running
        pid = s.shell
        self._kill_shell(s, "interrupted")
        if not job.fut.done():
            job.fut.set_result(
                {
                    "value": None,
                    "stdout": _clip(job.sink.out.getvalue()),
                    "stderr": _clip(job.sink.err.getvalue()),
                    "error": f"KeyboardInterrupt (the shell process {pid} was killed; "
                    "the next input gets a new one, with the same names)\n",
                    "error_type": "KeyboardInterrupt",
                    "shell": str(pid),
                    "notes": [],
                }
            )
        return {"interrupted": True}

    def complete(self, args: dict[str, Any]) -> dict[str, Any]:
        """Names in the session's namespace (and attributes) that start with ``text``."""
        s = self._session(args)
        text = args.get("text")
        if not isinstance(text, str):
            raise UsageError("console complete needs 'text'")
        self._bind_modules(s)
        comp = rlcompleter.Completer(s.ns)
        matches: list[str] = []
        for i in range(1000):
            try:
                m = comp.complete(text, i)
            except Exception:  # an attribute that raises on lookup: no more names
                break
            if m is None:
                break
            matches.append(m)
        return {"matches": matches}


def _reloader(main: NodeMain) -> Callable[..., Any]:
    node = main.node
    # a context with no process in it: the reload's task is not the shell process's child
    neutral = contextvars.copy_context()

    async def reload(module: Any, extra: Any = None) -> ReloadReport:
        """Reload a module from the code path, the safe way (what ``relhandler dev`` does
        on save): ``code_change`` migrates its behaviour processes if the new code defines
        one, a failure rolls back; processes still in its *oldest* code are killed (their
        supervisors restart them). Returns the :class:`ReloadReport`."""
        name = module if isinstance(module, str) else getattr(module, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"reload() takes a module or its dotted name, not {module!r}")
        h = main.handler
        work = reload_module(
            node,
            name,
            lock=h.lock if h is not None else None,
            extra=extra,
            request_restart=main.request_restart,
        )
        # run apart from the shell process: Ctrl-C kills the shell, never a reload halfway
        task = node.loop.create_task(work, context=neutral.copy())
        return await asyncio.shield(task)

    return reload


def make_op(main: NodeMain) -> Op:
    """The ``console`` op: ``{"action": "open" | "eval" | "complete" | "interrupt" |
    "close", "session": id, ...}``."""
    consoles = Consoles(main.node, _reloader(main))

    async def console(args: dict[str, Any], progress: Progress) -> Any:
        action = args.get("action")
        if action == "open":
            return consoles.open()
        if action == "eval":
            return await consoles.eval(args)
        if action == "complete":
            return consoles.complete(args)
        if action == "interrupt":
            return consoles.interrupt(args)
        if action == "close":
            consoles.close(str(args.get("session")))
            return {"closed": True}
        raise UsageError(
            f"console action {action!r} is unknown; use open, eval, complete, interrupt, close"
        )

    return console
