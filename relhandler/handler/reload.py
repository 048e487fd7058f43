"""Reload one module on the running node from its code path, the safe way: what a relup's
``update`` with ``advanced`` (or ``load_module``) does, for one module, without a release.

``relhandler dev`` runs it on every save; the console's ``reload(module)`` calls it too.

* The new code is compiled first: a syntax error changes nothing.
* A module whose new code defines ``code_change`` is ``update M advanced``: every behaviour
  process running M is suspended, its state migrated by the new ``code_change`` (tried first
  on a copy of each state, as an install's preflight does) and resumed. A running
  supervisor's callback module is ``update M supervisor`` (new flags and child specs from
  the new ``init``). Any other module is ``load_module M``: its behaviour processes switch
  at their next callback.
* Both are translated by systools_rc and evaluated by the release handler's
  :class:`~relhandler.handler.install.Installer`, so a failure after the point of no return
  is rolled back in place exactly as an install is.
* The pre-purge is brutal, as the shell's ``c/1``: processes still in the *oldest* code are
  killed by the load (their supervisors restart them on current code). Processes left in the
  code the load replaces keep running it and are listed in the report.

The reload runs in a task of the node's, holding the release handler's lock: a caller that
goes away (a dropped control connection) does not stop it halfway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from relhandler.errors import InstallError, ModuleLoadError
from relhandler.handler.install import Installer, InstallOptions, behaviour_index
from relhandler.handler.release_handler import _refuse_on
from relhandler.release._systools_rc import AppInfo, translate
from relhandler.runtime import Node, Pid
from relhandler.runtime.application import AppController
from relhandler.runtime.code import Prepared
from relhandler.terms import from_term

__all__ = ["ReloadReport", "reload_module"]

log = logging.getLogger("relhandler.reload")


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What one reload did.

    ``change`` is ``"advanced"`` (states migrated by ``code_change``) or ``"load"``;
    ``switched``: behaviour processes that run the new code from their next callback (their
    state untouched); ``migrated``: those suspended, migrated and resumed; ``old_code``:
    processes still running the version this load replaced; ``killed``: processes that were
    in the oldest version, which the load purged; ``elapsed_ms``: compile to resume.
    """

    module: str
    vsn: str
    old_vsn: str | None
    file: str
    change: Literal["advanced", "load"]
    switched: tuple[Pid, ...]
    migrated: tuple[Pid, ...]
    old_code: tuple[Pid, ...]
    killed: tuple[Pid, ...]
    elapsed_ms: float

    def to_wire(self) -> dict[str, Any]:
        """The report as JSON-able data (pids as ``<0.N.0>`` strings)."""
        return {
            "module": self.module,
            "vsn": self.vsn,
            "old_vsn": self.old_vsn,
            "file": self.file,
            "change": self.change,
            "switched": [str(p) for p in self.switched],
            "migrated": [str(p) for p in self.migrated],
            "old_code": [str(p) for p in self.old_code],
            "killed": [str(p) for p in self.killed],
            "elapsed_ms": self.elapsed_ms,
        }

    def line(self) -> str:
        """One line for a person: module, version, processes touched, time taken."""
        return summary(self.to_wire())


def summary(report: dict[str, Any]) -> str:
    """:meth:`ReloadReport.line` of a report's wire form (what the CLI receives)."""
    parts = [f"reloaded {report['module']} {report['vsn']}"]
    if report["migrated"]:
        parts.append(f"migrated {len(report['migrated'])} ({', '.join(report['migrated'])})")
    if report["switched"]:
        parts.append(f"switched {len(report['switched'])} ({', '.join(report['switched'])})")
    if not report["migrated"] and not report["switched"]:
        parts.append("no behaviour process")
    if report["old_code"]:
        parts.append(f"still in old code: {', '.join(report['old_code'])}")
    if report["killed"]:
        parts.append(f"killed in oldest code: {', '.join(report['killed'])}")
    parts.append(f"{report['elapsed_ms']:.1f} ms")
    return ", ".join(parts)


def _owner(node: Node, module: str) -> AppInfo:
    """The application ``module`` belongs to, for systools_rc (a module added since boot
    belongs to the application of its top package)."""
    apps = node.apps
    top = module.partition(".")[0]
    if isinstance(apps, AppController):
        specs = [la.spec for la in apps.loaded.values()]
        for spec in specs:
            if module in spec.modules:
                return AppInfo(spec.name, spec.version, tuple(spec.modules))
        for spec in specs:
            if any(m.partition(".")[0] == top for m in spec.modules):
                return AppInfo(spec.name, spec.version, (*spec.modules, module))
    return AppInfo(top, "0", (module,))


def _base(p: Prepared) -> Path:
    """The code path directory ``p`` was found in."""
    depth = p.name.count(".") + (1 if p.is_package else 0)
    return p.file.parents[depth]


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def reload_module(
    node: Node,
    module: str,
    *,
    lock: asyncio.Lock | None = None,
    extra: Any = None,
    options: InstallOptions | None = None,
    request_restart: Callable[[], None] | None = None,
) -> ReloadReport:
    """Reload ``module`` from the node's code path (see the module docstring).

    ``lock`` is the release handler's (``main.handler.lock`` on a node): no reload lands in
    the middle of an install. ``extra`` is passed to ``code_change`` (default ``[]``, as an
    appup's advanced update); ``options`` carry the suspend and code_change timeouts.
    ``request_restart`` is called if a failure's rollback fails too (the node restarts on
    its permanent release, as after a failed install).

    Raises ``ModuleLoadError`` (syntax error, or the new code raised while loading: file and
    line in the message), ``NoSuchModuleError``, or ``InstallError`` (``preflight_failed``:
    a ``code_change`` would raise, nothing was changed; else rolled back in place).
    """
    lock = lock if lock is not None else asyncio.Lock()
    await lock.acquire()  # cancelled while waiting here: nothing was started
    try:
        task = asyncio.get_running_loop().create_task(
            _owned(node, module, lock, extra, options or InstallOptions(), request_restart),
            name=f"reload {module}",
        )
    except BaseException:
        lock.release()
        raise
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


async def _owned(
    node: Node,
    module: str,
    lock: asyncio.Lock,
    extra: Any,
    options: InstallOptions,
    request_restart: Callable[[], None] | None,
) -> ReloadReport:
    try:
        return await _reload(node, module, extra, options, request_restart)
    finally:
        lock.release()


async def _reload(
    node: Node,
    module: str,
    extra: Any,
    options: InstallOptions,
    request_restart: Callable[[], None] | None,
) -> ReloadReport:
    node.bind()
    t0 = time.perf_counter()
    code = node.code
    prepared = code.prepare(module)  # a syntax error stops here: nothing changed
    app = _owner(node, module)
    instr: Any
    if any(
        p.behaviour == "supervisor" and getattr(p.sys, "module", None) == module
        for p in list(node.processes.values())
    ):
        # a supervisor's callback module: its code_change re-runs the new init, so new
        # flags and child specs take effect (the appup's `update M supervisor`)
        instr = ("update", module, "supervisor")
    elif "code_change" in prepared.code.co_names:  # def, assignment or import
        instr = ("update", module, ("advanced", [] if extra is None else extra))
    else:
        instr = ("load_module", module)
    advanced = instr[0] == "update"
    # the installer reads the relup file's array form, as from a relup.toml
    script = [from_term(i) for i in translate("up", [[instr]], [app], [app])]
    base = _base(prepared)
    inst = Installer(
        node,
        script,
        mode="up",
        lib_dir=lambda _app, _vsn: base,
        new_path=list(code.path),
        new_specs=(),
        new_env={},
        options=options,
        index=behaviour_index,
    )
    inst.check()
    failures = await inst.preflight()
    try:
        _refuse_on(failures)
    except InstallError as e:
        raise InstallError(
            f"reload of {module}: {e.message}", code=e.code, details=e.details
        ) from e
    old_vsn = code.vsn(module)
    killed = tuple(code.old_code_users(module))
    running = behaviour_index(node).get(module, [])
    try:
        await inst.execute()
    except InstallError as e:
        if e.code == "rollback_failed" and request_restart is not None:
            request_restart()
        cause = e.__cause__
        if isinstance(cause, ModuleLoadError):
            # the new code raised at its top level: say where, as a compile error does
            raise ModuleLoadError(
                f"{cause.message}; the node keeps running {old_vsn or 'no version'} of {module}",
                details=cause.details,
            ) from cause
        raise InstallError(
            f"reload of {module}: {e.message}", code=e.code, details=e.details
        ) from e
    migrated = tuple(inst.suspended.get(module, ()))
    done = set(migrated) | set(killed)
    switched = tuple(p for p in running if p not in done and p in node.processes)
    report = ReloadReport(
        module=module,
        vsn=code.vsn(module) or prepared.vsn,
        old_vsn=old_vsn,
        file=str(prepared.file),
        change="advanced" if advanced else "load",
        switched=switched,
        migrated=migrated,
        old_code=tuple(code.old_code_users(module)),
        killed=killed,
        elapsed_ms=round((time.perf_counter() - t0) * 1000, 3),
    )
    log.info("%s", report.line())
    return report
