"""The node program: boot a release root, serve the control socket, shut down in order.

``relhandler start --root DIR`` runs :func:`run_node` in the foreground (logs on stderr);
``--daemon`` starts the same command detached, logging to ``log/node.log``. SIGTERM,
SIGINT or ``relhandler stop`` stop the applications in reverse order (terminate callbacks
run) and exit 0. A node that must restart (``reboot_old``, an emulator restart instruction)
re-executes itself in the same OS process, booting what start.toml says. If that boot was
a one-shot ``next_boot`` (a restart-type install) and it fails, the node records why in
``run/boot_failure.json`` and re-executes once more on the permanent release, as OTP's heart
restart does; the new node's ``ping`` reports that failure, so the CLI waiting for the restart
can say exit 1 with the reason. Listening sockets are handed to the re-executed node
(``runtime/listenfds.py``), so connections wait in the backlog instead of being refused.

Both the daemon and every re-exec run ``python -I`` (isolated mode: no current directory or
script directory on ``sys.path``, no ``PYTHON*`` variables, no user site) with the release
root as working directory, so nothing in the directory the operator stood in is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import importlib
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from relhandler.control import console, node_ops
from relhandler.control.server import ControlServer, ensure_cookie, run_dir
from relhandler.errors import ReleaseError, UnreachableError, UsageError
from relhandler.handler import store
from relhandler.handler.boot import BootedRelease, boot
from relhandler.handler.events import EventLog, log_options, reason_text
from relhandler.runtime import Node, listenfds
from relhandler.runtime.application import AppController

__all__ = [
    "NodeMain",
    "check_not_running",
    "lock_root",
    "node_argv",
    "run_node",
    "start_daemon",
]

log = logging.getLogger("relhandler.node")


def node_argv(root: Path, *, release: str | None = None) -> list[str]:
    """The command that runs a node on ``root``: isolated Python, never the working dir."""
    argv = [sys.executable, "-I", "-m", "relhandler.cli", "start", "--root", str(root)]
    if release:
        argv += ["--release", release]
    return argv


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"relhandler" in cmd


# sockaddr_un.sun_path holds 108 bytes on Linux, the terminating NUL included
SOCKET_PATH_MAX = 107


def check_socket_path(root: Path) -> None:
    """Refuse, before anything is written or booted, a root whose control socket path is
    longer than a Unix socket address allows."""
    sock = run_dir(root) / "node.sock"
    n = len(os.fsencode(sock))
    if n > SOCKET_PATH_MAX:
        raise UsageError(
            f"--root {root}: its control socket {sock} would be {n} bytes, over the "
            f"{SOCKET_PATH_MAX} a Unix socket path may have; use a shorter root path",
            code="root_path_too_long",
        )


def check_not_running(root: Path) -> None:
    """Refuse a root whose node is alive; clean up what a killed node left behind."""
    rd = run_dir(root)
    sock_path = rd / "node.sock"
    pid_path = rd / "node.pid"
    if sock_path.exists():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(str(sock_path))
        except OSError:
            pass
        else:
            raise ReleaseError(
                f"a node is already running on {root} (socket {sock_path} answers); "
                f"stop it first with `relhandler stop --root {root}`",
                code="already_running",
            )
        finally:
            s.close()
    if pid_path.exists():
        try:
            pid = int(pid_path.read_text().strip() or "0")
        except ValueError:
            pid = 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise ReleaseError(
                f"a node is already running on {root} (pid {pid} in {pid_path}); "
                f"stop it first with `relhandler stop --root {root}`",
                code="already_running",
            )
        log.warning("removing stale pid file %s (pid %s is gone)", pid_path, pid)
        pid_path.unlink(missing_ok=True)
    if sock_path.exists():
        log.warning("removing stale control socket %s", sock_path)
        sock_path.unlink(missing_ok=True)


def lock_root(root: Path) -> int:
    """Take ``run/node.lock`` for the life of this node (an fd); refuse if another node has it.

    The kernel drops an flock when its holder dies, so kill -9 never leaves a stale lock,
    and two starts racing on one root cannot both pass (the socket and pid checks alone
    could: both see no socket, then the second unlinks the first's).
    """
    path = run_dir(root) / "node.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ReleaseError(
            f"a node is already running on {root} (it holds {path}); "
            f"stop it first with `relhandler stop --root {root}`",
            code="already_running",
        ) from None
    return fd


class NodeMain:
    """One node process: the runtime node, the booted release, the control server."""

    def __init__(self, root: Path, *, release: str | None = None) -> None:
        self.root = root.resolve()
        self.requested = release
        self.node = Node(name=f"relhandler@{self.root}")
        self.booted: BootedRelease | None = None
        self._stop = asyncio.Event()
        self.exit_code = 0
        self.restart_argv: list[str] | None = None
        # the release handler attaches its state here (control/release_ops.py)
        self.handler: Any = None
        # tells this boot from the one before a re-exec (same OS pid): the CLI waits for it
        self.boot_id = secrets.token_hex(8)
        # why the one-shot boot before this one failed (read from run/boot_failure.json)
        self.boot_failure: dict[str, Any] | None = None
        self.events = EventLog(None)  # opened on log/ by run()
        # confirm-or-revert (control/confirm_ops.py): the windows, and the boot's report of
        # a window the previous run left open
        self.confirmer: Any = None
        self.confirm_boot_report: Any = None

    @property
    def release_name(self) -> str | None:
        return self.booted.release.name if self.booted else None

    @property
    def release_version(self) -> str | None:
        return self.booted.release.version if self.booted else None

    def request_stop(self, code: int = 0) -> None:
        self.exit_code = code
        asyncio.get_running_loop().call_soon(self._stop.set)

    def request_restart(self) -> None:
        """Stop in order, then exec a fresh node on this root (boots what start.toml says)."""
        self.restart_argv = node_argv(self.root)
        listenfds.registry.hand_over()  # the ports keep listening through the exec
        self.request_stop(0)

    def _process_exit(self, p: Any, reason: Any) -> None:
        # shutdown is how supervisors and a stopping node end processes: not news (OTP's
        # proc_lib reports every reason but normal, shutdown and {shutdown, _} too)
        if reason == "shutdown" or (
            isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"
        ):
            return
        self.events.emit(
            "process.exit",
            pid=str(p.pid),
            initial_call=str(p.initial_call),
            name=p.name,
            reason=reason_text(reason),
            crash=isinstance(reason, BaseException),
        )

    def _app_died(self, app: str, reason: Any) -> None:
        log.error("permanent application %s exited (%r): stopping the node", app, reason)
        self.request_stop(1)

    async def run(self) -> int:
        """Boot, serve until stopped, shut down in order; the exit code."""
        check_socket_path(self.root)
        store.read_releases(self.root)  # a corrupt RELEASES.toml: refused before any app boots
        max_bytes, files = log_options()
        try:
            cookie = ensure_cookie(self.root)
        except OSError as e:
            raise _start_failed(e) from e
        self.events = EventLog(
            self.root / "log",
            max_bytes=max_bytes,
            files=files,
            release=lambda: self.release_version,
            boot=self.boot_id,
        )
        try:
            lock_fd = lock_root(self.root)
        except OSError as e:
            raise _start_failed(e) from e
        try:
            return await self._run_locked(cookie)
        finally:
            os.close(lock_fd)

    async def _run_locked(self, cookie: bytes) -> int:
        check_not_running(self.root)
        pid_path = run_dir(self.root) / "node.pid"
        fd = os.open(pid_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        self.node.activate()
        self.node.exit_hook = self._process_exit
        AppController(self.node, on_permanent_exit=self._app_died)
        server: ControlServer | None = None
        self.boot_failure = _take_boot_failure(self.root)
        start = store.read_start(self.root) if self.requested is None else None
        one_shot = start.next_boot if start is not None else None
        try:
            try:
                self.booted = await boot(self.node, self.root, release=self.requested)
            except Exception as e:
                if one_shot is None:
                    raise
                # the one-shot boot (consumed by now) failed: fall back to the permanent
                # release in a fresh process, and leave it the reason to report
                log.error(
                    "booting %s failed (%s): restarting on the permanent release", one_shot, e
                )
                _write_boot_failure(self.root, one_shot, e)
                self.restart_argv = node_argv(self.root)
                listenfds.registry.hand_over()
                return 1
            listenfds.registry.close_unadopted()  # addresses this release no longer listens on
            ops = node_ops.make_ops(self)
            ops["console"] = console.make_op(self)
            try:
                release_ops = importlib.import_module("relhandler.control.release_ops")
            except ModuleNotFoundError as e:
                if e.name != "relhandler.control.release_ops":
                    raise
            else:
                release_ops.register(ops, self)
                importlib.import_module("relhandler.control.verify_ops").register(ops, self)
                importlib.import_module("relhandler.control.confirm_ops").register(ops, self)
            server = ControlServer(self.root, cookie, ops)
            await server.start()
            # what boot created lives as long as the node: keep it out of GC passes
            gc.freeze()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            self.events.emit("node.start", os_pid=os.getpid(), release=self.release_version)
            if self.confirm_boot_report is not None:
                self.confirm_boot_report()
            log.info(
                "node up: release %s %s, %d processes, control socket %s",
                self.release_name,
                self.release_version,
                len(self.node.processes),
                server.path,
            )
            await self._stop.wait()
            log.info("stopping: applications in reverse start order")
        finally:
            if server is not None:
                await server.close()
            if self.handler is not None:
                await self.handler.settle()  # an accepted install ends before the apps stop
            if isinstance(self.node.apps, AppController):
                await self.node.apps.stop_all()
            await self.node.close()
            self.events.emit(
                "node.stop", exit_code=self.exit_code, restart=self.restart_argv is not None
            )
            self.events.close()
            pid_path.unlink(missing_ok=True)
        return self.exit_code


def _failure_path(root: Path) -> Path:
    return run_dir(root) / "boot_failure.json"


def _write_boot_failure(root: Path, release: str, e: BaseException) -> None:
    msg = getattr(e, "message", None) or str(e)
    record = {"release": release, "error": f"{type(e).__name__}: {msg}", "at": time.time()}
    with contextlib.suppress(OSError):
        _failure_path(root).write_text(json.dumps(record))


def _take_boot_failure(root: Path) -> dict[str, Any] | None:
    """The failure a previous one-shot boot left, removed from disk (reported once per boot)."""
    p = _failure_path(root)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    finally:
        p.unlink(missing_ok=True)
    return data if isinstance(data, dict) else None


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("RELHANDLER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _start_failed(e: OSError) -> ReleaseError:
    return ReleaseError(
        f"start failed: {store.describe_os_error(e)}; the node writes run/ and log/ in its "
        f"release root, so the root must be writable",
        code="io_error",
        details={"path": e.filename, "errno": e.errno},
    )


def run_node(root: Path, *, release: str | None = None) -> int:
    """Run a node in the foreground until stopped; returns the process exit code."""
    _setup_logging()
    listenfds.registry.inherit(os.environ)  # the listeners of the node this exec replaced
    main = NodeMain(root, release=release)
    if importlib.util.find_spec("uvloop") is not None:  # optional faster loop
        import uvloop  # type: ignore[import-not-found]

        code: int = uvloop.run(main.run())
    else:
        code = asyncio.run(main.run())
    if main.restart_argv is not None:
        logging.shutdown()
        os.chdir(main.root)  # the working directory is the root, not where start ran
        listenfds.registry.export(os.environ)  # inheritable only now, for this exec
        os.execv(main.restart_argv[0], main.restart_argv)
    return code


def start_daemon(root: Path, *, release: str | None = None, wait: float = 30.0) -> int:
    """Start a detached node logging to ``log/node.log``; wait until it answers; its pid."""
    root = root.resolve()
    check_socket_path(root)
    store.read_releases(root)
    check_not_running(root)
    log_dir = root / "log"
    try:
        log_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(log_dir, 0o700)  # node logs quote state and paths: the node's owner only
        fd = os.open(log_dir / "node.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as e:
        raise _start_failed(e) from e
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(
            node_argv(root, release=release),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=root,
            start_new_session=True,
        )
    from relhandler.control.client import Client

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ReleaseError(
                f"the node exited during start (code {proc.returncode}); "
                f"see {log_dir / 'node.log'}",
                code="start_failed",
            )
        with contextlib.suppress(UnreachableError), Client(root, timeout=2.0) as c:
            c.call("ping")
            return proc.pid
        time.sleep(0.05)
    raise ReleaseError(
        f"the node did not answer within {wait}s; see {log_dir / 'node.log'}", code="start_failed"
    )
