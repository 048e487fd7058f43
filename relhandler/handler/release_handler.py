"""The release handler on a running node: which_releases, unpack, check_install, install,
make_permanent, remove, reboot_old (OTP's ``release_handler``).

It keeps the node's view of the releases in memory (``current`` lives only here, as in OTP)
and writes ``RELEASES.toml`` / ``start.toml`` through :mod:`relhandler.handler.store`, every
change under the intent journal (:mod:`relhandler.handler.journal`). Memory follows disk: the
in-memory view is re-read from the disk after every operation, failed or not. Disk work runs
on one worker thread, so a big unpack or remove never stalls the node.

An install, once accepted, belongs to the node: it runs in a task of its own, shielded from
the connection that asked for it, and ends installed or rolled back whatever happens to the
client. Its progress and outcome are kept (:class:`InstallRun`) for ``status`` and for a
client that asks for the same install again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from relhandler.errors import InstallError, ReleaseError, ReleaseInputError, RelhandlerError
from relhandler.handler import journal, store
from relhandler.handler import unpack as unpacking
from relhandler.handler.boot import BootedRelease, code_path, load_release
from relhandler.handler.events import NO_EVENTS, EventLog
from relhandler.handler.install import Installer, InstallOptions
from relhandler.handler.lost import restart_loss
from relhandler.handler.unpack import record_of
from relhandler.release.relup import read_relup
from relhandler.release.restart import restarts
from relhandler.release.tarball import DEFAULT_LIMITS
from relhandler.runtime import Node
from relhandler.runtime.application import AppController

__all__ = ["InstallRun", "ReleaseHandler"]

log = logging.getLogger("relhandler.release_handler")

Progress = Callable[[dict[str, Any]], Awaitable[None]]
T = TypeVar("T")
Op = Callable[["ReleaseHandler", str], Awaitable[dict[str, Any]]]


def error_of(e: BaseException) -> dict[str, str]:
    """``{code, message}`` of an exception, for an event."""
    if isinstance(e, RelhandlerError):
        return {"code": e.code, "message": e.message}
    if isinstance(e, asyncio.CancelledError):
        return {"code": "cancelled", "message": "the node stopped during the operation"}
    return {"code": "internal", "message": f"{type(e).__name__}: {e}"}


def _evented(kind: str, *keep: str) -> Callable[[Op], Op]:
    """Emit one ``kind`` event when the operation on a version ends, done or failed."""

    def deco(fn: Op) -> Op:
        @functools.wraps(fn)
        async def op(self: ReleaseHandler, vsn: str) -> dict[str, Any]:
            try:
                out = await fn(self, vsn)
            except BaseException as e:
                self.events.emit(kind, version=vsn, ok=False, error=error_of(e))
                raise
            self.events.emit(kind, version=vsn, ok=True, **{k: out[k] for k in keep if k in out})
            return out

        return op

    return deco


def _refuse_on(failures: list[dict[str, Any]]) -> None:
    """Raise the preflight's refusal naming the processes whose code_change would raise."""
    if not failures:
        return
    late = [f for f in failures if f.get("timeout")]
    if late:
        f = late[0]
        raise InstallError(
            f"preflight: {f['error']} (process {f['pid']}); nothing was changed",
            code="preflight_timeout",
            details={"failures": failures},
        )
    first = failures[0]
    fn = f"{first['module']}.{first.get('function', 'code_change')}"
    key = (first["module"], first.get("function"))
    same = [f for f in failures if (f["module"], f.get("function")) == key]
    pids = ", ".join(f["pid"] for f in same[:5])
    more = "…" if len(same) > 5 else ""
    others = len(failures) - len(same)
    rest = f"; {others} more failure(s) elsewhere (--json lists them)" if others else ""
    raise InstallError(
        f"preflight: {fn} would fail in {len(same)} process(es) ({pids}{more}): "
        f"{first['error']}; nothing was changed{rest}",
        code="preflight_failed",
        hint=f"fix {fn} in the new version, rebuild it, then remove and unpack it again",
        details={"failures": failures},
    )


@dataclass(slots=True, eq=False)
class InstallRun:
    """One install the node accepted: under way, or how it ended (what ``status`` shows).

    ``state``: ``running``, then ``installed``, ``refused`` (nothing was changed),
    ``rolled_back`` (failed after the point of no return, rolled back in place) or
    ``failed`` (the rollback failed too: the node restarts on the permanent release).
    """

    version: str
    from_vsn: str
    dry_run: bool
    state: str = "running"
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    step: str | None = None  # the last progress message
    past_pnr: bool = False
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    listeners: list[Progress] = field(default_factory=list)
    task: asyncio.Task[dict[str, Any]] | None = None

    async def emit(self, event: dict[str, Any]) -> None:
        """Pass a progress event to the clients following; one that fails is dropped."""
        self.step = str(event.get("message", self.step))
        for fn in list(self.listeners):
            try:
                await fn(event)
            except Exception:
                if fn in self.listeners:
                    self.listeners.remove(fn)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "from": self.from_vsn,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "step": self.step,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def _unexpected(vsn: str, e: BaseException) -> InstallError:
    """A non-relhandler exception out of an install (``SystemExit`` from new code, ...)."""
    return InstallError(f"install of {vsn} failed: {type(e).__name__}: {e}", code="install_failed")


def _retrieve(task: asyncio.Task[Any]) -> None:
    # nobody may be left to await the task (its clients gone): mark its exception seen
    if not task.cancelled():
        task.exception()


class ReleaseHandler:
    """Release lifecycle for one node (``main.handler``).

    ``lock`` serialises every release-handler operation; the node's code loading (reload,
    purge, an rpc that loads a module) takes it too (control/node_ops.py), so nothing
    changes the module table under an install.
    """

    def __init__(
        self,
        node: Node,
        root: Path,
        booted: BootedRelease,
        request_restart: Callable[[], None],
        *,
        lock: asyncio.Lock | None = None,
        on_current: Callable[[BootedRelease], None] | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.node = node
        self.root = root
        self.booted = booted
        self.request_restart = request_restart
        self.lock = lock if lock is not None else asyncio.Lock()
        self.on_current = on_current
        self.events = events if events is not None else NO_EVENTS
        self.last_install: InstallRun | None = None  # the running install, or the last one
        self.unpurged: dict[str, str] = {}
        rels = store.read_releases(root)
        vsn = booted.release.version
        if rels.get(vsn) is None:
            # a root laid out by hand without RELEASES.toml: the booted release is permanent
            rels = store.Releases((record_of(booted.release, "permanent"),))
            store.write_releases(root, rels)
        elif rels.require(vsn).status != "permanent":
            rels = rels.set_current(vsn)  # booted once (next_boot) without being permanent
        self.releases = rels
        self._purger: asyncio.Task[None] | None = None
        self.limits = DEFAULT_LIMITS
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relhandler-disk")

    def _restart(self, reason: str, boots: str | None) -> None:
        self.events.emit("node.restart", reason=reason, boots=boots)
        self.request_restart()

    def _ev(self, run: InstallRun, kind: str, **data: Any) -> None:
        if not run.dry_run:  # a dry run changes nothing: no events
            self.events.emit(kind, version=run.version, **data)

    def _stepper(self, run: InstallRun, total: list[int]) -> Progress:
        """The installer's progress callback: an ``install.step`` event per instruction,
        then the clients following."""

        async def progress(event: dict[str, Any]) -> None:
            if "index" in event and "instruction" in event:
                self._ev(
                    run,
                    "install.step",
                    index=event["index"],
                    total=total[0],
                    instruction=event["instruction"],
                    ms=event.get("ms", 0.0),
                )
            await run.emit(event)

        return progress

    @property
    def current(self) -> str:
        return self.booted.release.version

    def which_releases(self) -> list[dict[str, Any]]:
        return self.releases.rows()

    # -- disk ----------------------------------------------------------------------------
    def _view(self) -> store.Releases:
        """The releases as the disk has them (once a pending journal is recovered), with
        the running release marked ``current``."""
        rels = journal.expected_releases(self.root)
        r = rels.get(self.current)
        if r is not None and r.status != "permanent":
            rels = rels.set_current(self.current)
        return rels

    async def _on_disk(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the disk thread; then memory follows whatever the disk has."""
        fut = asyncio.get_running_loop().run_in_executor(self._disk, fn)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            await asyncio.wait([fut])  # keep the lock until the disk work is over
            raise
        finally:
            try:
                self.releases = self._view()
            except Exception:
                log.exception("cannot re-read %s; keeping the view", store.releases_path(self.root))

    def _commit(
        self,
        op: str,
        vsn: str,
        rels: store.Releases | None,
        start: store.StartFile | None = None,
        deleted: tuple[str, ...] = (),
    ) -> None:
        """Recover what an earlier operation left, then write ``rels``/``start`` and delete
        ``deleted`` as one journaled change (disk thread)."""
        what = f"{op.replace('_', '-')} {vsn}"
        try:
            journal.recover(self.root)
        except OSError as e:
            raise journal.io_error(what, e, "pending") from e
        intent = journal.Intent(
            op, vsn, files=tuple(journal.changes(self.root, rels, start)), deleted=deleted
        )
        journal.transact(self.root, what, intent)

    # -- unpack ------------------------------------------------------------------------------
    async def unpack(self, tarball: Path) -> dict[str, Any]:
        async with self.lock:
            try:
                u = await self._on_disk(
                    lambda: unpacking.unpack(tarball, self.root, limits=self.limits)
                )
            except BaseException as e:
                self.events.emit("unpack", tarball=str(tarball), ok=False, error=error_of(e))
                raise
            self.events.emit(
                "unpack", tarball=str(tarball), version=u.version, ok=True, already=u.already
            )
            rec = self.releases.require(u.version)
            if not u.already:
                log.info("unpacked release %s", u.version)
            return {
                "version": u.version,
                "status": rec.status,
                "already": u.already,
                "current": self.current,
            }

    # -- install -----------------------------------------------------------------------------
    def _script(self, vsn: str) -> tuple[list[Any], str, str]:
        """(instructions, mode, other vsn) from vsn's relup (up) or the current's (down)."""
        cur = self.current
        up_path = self.root / "releases" / vsn / "relup.toml"
        if up_path.exists():
            e = read_relup(up_path).up_from(cur)
            if e is not None:
                return list(e.instructions), "up", cur
        down_path = self.root / "releases" / cur / "relup.toml"
        if down_path.exists():
            e = read_relup(down_path).down_to(vsn)
            if e is not None:
                return list(e.instructions), "down", vsn
        raise ReleaseInputError(
            f"no relup leads from {cur} to {vsn}: neither releases/{vsn}/relup.toml has an up "
            f"entry from {cur} nor releases/{cur}/relup.toml a down entry to {vsn}; run "
            f"`relhandler relup --to {vsn} --from {cur}`",
            code="no_matching_relup",
        )

    def _installer(
        self, vsn: str, opts: InstallOptions, progress: Progress | None
    ) -> tuple[Installer, BootedRelease, str, str]:
        if self.releases.get(vsn) is None:
            known = ", ".join(r.version for r in self.releases.releases)
            name = self.booted.release.name
            raise ReleaseInputError(
                f"release {vsn} is not unpacked on this node (known: {known}); unpack it "
                f"first: `relhandler unpack _build/rel/{name}-{vsn}.tar.gz` (or `relhandler "
                f"upgrade TARBALL`, which unpacks, installs and makes it permanent)",
                code="no_such_release",
            )
        rec = self.releases.require(vsn)
        if vsn == self.current:
            raise ReleaseError(
                f"release {vsn} is already installed (current)", code="already_installed"
            )
        del rec
        script, mode, other = self._script(vsn)
        target = load_release(self.root, vsn)

        def lib_dir(app: str, app_vsn: str) -> Path:
            ra = target.release.app(app)
            if ra is None or ra.version != app_vsn:
                raise ReleaseInputError(
                    f"load_object_code names {app} {app_vsn}, but release {vsn} has "
                    f"{app} {ra.version if ra else 'not at all'}",
                    code="bad_lib_vsn",
                )
            return self.root / "lib" / ra.dir_name

        new_env = {
            spec.name: {**dict(spec.env), **target.env.get(spec.name, {})} for spec in target.apps
        }
        inst = Installer(
            self.node,
            script,
            mode=mode,
            lib_dir=lib_dir,
            new_path=code_path(target),
            new_specs=target.apps,
            new_env=new_env,
            options=opts,
            progress=progress,
        )
        return inst, target, mode, other

    async def check_install(self, vsn: str, opts: InstallOptions | None = None) -> dict[str, Any]:
        """Everything before the point of no return, plus the preflight; changes nothing."""
        async with self.lock:
            self.node.bind()
            inst, _target, mode, other = self._installer(vsn, opts or InstallOptions(), None)
            try:
                inst.check()
                failures = await inst.preflight()
            except (RelhandlerError, asyncio.CancelledError):
                raise
            except BaseException as e:
                raise _unexpected(vsn, e) from e
            out = {
                "version": vsn,
                "from": self.current,
                "mode": mode,
                "other": other,
                "instructions": len(inst.terms),
                "preflight": failures,
            }
            _refuse_on(failures)
            return out

    async def install(
        self, vsn: str, opts: InstallOptions, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Upgrade or downgrade the running node to ``vsn`` (rolled back in place on error).

        The install runs in a task of the node's: cancelling the caller (a client gone, its
        connection dropped) stops only the following, never the install. A call for an
        install of ``vsn`` already under way follows that one."""
        run = self.last_install
        if (
            run is not None
            and run.task is not None
            and not run.task.done()
            and (run.version, run.dry_run) == (vsn, opts.dry_run)
        ):
            return await self._follow(run, progress)
        await self.lock.acquire()  # cancelled while waiting here: nothing was accepted
        try:
            last = self.last_install
            if (
                not opts.dry_run
                and last is not None
                and last.result is not None
                and last.version == vsn == self.current
            ):
                # a client that lost the reply asks again: the outcome, not an error
                self.lock.release()
                return {**last.result, "already": True}
            run = InstallRun(vsn, self.current, opts.dry_run)
            if progress is not None:
                run.listeners.append(progress)
            run.task = asyncio.get_running_loop().create_task(
                self._owned(run, opts), name=f"install {vsn}"
            )
        except BaseException:
            self.lock.release()
            raise
        run.task.add_done_callback(_retrieve)
        if not opts.dry_run:
            self.last_install = run
        return await self._follow(run, None)

    async def _follow(self, run: InstallRun, progress: Progress | None) -> dict[str, Any]:
        assert run.task is not None
        if progress is not None:
            run.listeners.append(progress)
            if run.step is not None:
                await run.emit({"message": f"install of {run.version} under way: {run.step}"})
        try:
            return await asyncio.shield(run.task)
        finally:
            if progress is not None and progress in run.listeners:
                run.listeners.remove(progress)

    async def settle(self) -> None:
        """Wait for an install under way to end (the node stops only after it)."""
        run = self.last_install
        if run is not None and run.task is not None and not run.task.done():
            log.warning("stopping: waiting for the install of %s to finish", run.version)
            await asyncio.wait([run.task])  # its outcome is the install's, not the stop's

    async def _owned(self, run: InstallRun, opts: InstallOptions) -> dict[str, Any]:
        """The install task's body: never lets a BaseException of new code reach the loop."""
        self._ev(run, "install.start", **{"from": run.from_vsn})
        try:
            result = await self._install(run, opts)
        except asyncio.CancelledError as e:
            run.state = "rolled_back" if run.past_pnr else "refused"
            run.error = {"code": "cancelled", "message": "the node stopped during the install"}
            self._ended(run, error_of(e))
            raise
        except BaseException as e:
            err = e if isinstance(e, RelhandlerError) else _unexpected(run.version, e)
            if not run.past_pnr:
                run.state = "refused"
            else:
                run.state = "failed" if err.code == "rollback_failed" else "rolled_back"
            run.error = err.to_wire()
            self._ended(run, error_of(err))
            log.info("install of %s ended %s: %s", run.version, run.state, err.message)
            if err is e:
                raise
            raise err from e
        else:
            run.state = "installed"
            run.result = result
            self._ended(run, None, result)
            return result
        finally:
            run.finished_at = time.time()
            run.listeners.clear()
            self.lock.release()

    def _ended(
        self, run: InstallRun, error: dict[str, str] | None, result: dict[str, Any] | None = None
    ) -> None:
        """``install.rollback`` (past the point of no return) and ``install.end``."""
        if error is not None and run.past_pnr:
            self._ev(run, "install.rollback", ok=run.state == "rolled_back", error=error)
        data: dict[str, Any] = {
            "from": run.from_vsn,
            "outcome": "restarting" if result and result.get("restart") else run.state,
            "ms": round((time.time() - run.started_at) * 1000, 3),
        }
        if result is not None and result.get("mode") in ("up", "down"):
            data["mode"] = result["mode"]
        if error is not None:
            data["error"] = error
        self._ev(run, "install.end", **data)

    async def _install(self, run: InstallRun, opts: InstallOptions) -> dict[str, Any]:
        self.node.bind()
        vsn = run.version
        t0 = time.perf_counter()
        n_terms = [0]
        inst, target, mode, other = self._installer(vsn, opts, self._stepper(run, n_terms))
        n_terms[0] = len(inst.terms)
        self._ev(run, "install.phase", phase="planned", mode=mode, instructions=n_terms[0])
        # a restart loses every process's state: say whose, and why, before it happens
        lost = (
            restart_loss(self.node, self.booted.release, target.release, self.root, inst.terms)
            if restarts(inst.terms)
            else {}
        )
        if inst.terms and inst.terms[0] == "restart_new_emulator":
            if opts.dry_run:
                return {
                    "dry_run": True,
                    "version": vsn,
                    "from": self.current,
                    "restart": True,
                    "steps": inst.dry_run(),
                    **lost,
                }
            # the runtime beneath changed (deps or Python): boot the new release fresh
            start = store.read_start(self.root) or store.StartFile(self.current)
            await self._on_disk(
                lambda: self._commit("install", vsn, None, replace(start, next_boot=vsn))
            )
            self._restart("restart_new_emulator", vsn)
            return {
                "version": vsn,
                "from": self.current,
                "restart": True,
                "message": "the node restarts on the new release (state not carried)",
                **lost,
            }
        t_plan = time.perf_counter()
        inst.check()
        t_check = time.perf_counter()
        self._ev(run, "install.phase", phase="checked", ms=round((t_check - t_plan) * 1000, 3))
        await asyncio.sleep(0)  # let the node serve what arrived while we planned and checked
        failures = await inst.preflight()
        t_pre = time.perf_counter()
        self._ev(
            run,
            "install.phase",
            phase="preflight",
            ms=round((t_pre - t_check) * 1000, 3),
            failures=len(failures),
        )
        _refuse_on(failures)
        if opts.dry_run:
            return {
                "dry_run": True,
                "version": vsn,
                "from": self.current,
                "mode": mode,
                "steps": inst.dry_run(),
                **({"restart": True, **lost} if lost else {}),
            }
        await inst.run_before_pnr()
        run.past_pnr = True  # from here on a failure is rolled back
        self._ev(run, "install.phase", phase="point_of_no_return")
        crash = os.environ.get("RELHANDLER_TEST_CRASH_AFTER")
        old_env = (
            {n: dict(la.env) for n, la in self.node.apps.loaded.items()}
            if isinstance(self.node.apps, AppController)
            else {}
        )
        try:
            result = await inst.execute(int(crash) if crash else None)
        except InstallError as e:
            if e.code == "rollback_failed":
                # OTP's behaviour: restart; the node boots the permanent release and the
                # new one shows as unpacked (current is never written to disk)
                perm = self.releases.permanent
                self._restart("rollback_failed", perm.version if perm else None)
            raise
        # memory follows disk: the release files first; if the disk refuses, the code goes
        # back too, so the node, its view and the next boot agree
        previous = self.current
        new_rels = self.releases.set_current(vsn)
        restart_start = None
        if result.restart:
            restart_start = replace(
                store.read_start(self.root) or store.StartFile(previous), next_boot=vsn
            )
        try:
            await self._on_disk(lambda: self._commit("install", vsn, new_rels, restart_start))
        except ReleaseError:
            await inst.rollback()
            raise
        self._ev(run, "install.phase", phase="committed")
        self.booted = target
        if self.on_current is not None:
            self.on_current(target)
        self.releases = self._view()
        self.unpurged.update(result.unpurged)
        if self.unpurged and self._purger is None:
            self._purger = asyncio.get_running_loop().create_task(self._soft_purge_loop())
        if isinstance(self.node.apps, AppController):
            new_env = {n: la.env for n, la in self.node.apps.loaded.items()}
            for n, la in self.node.apps.loaded.items():
                la.env = old_env.get(n, la.env)
            try:
                await self.node.apps.change_config(new_env)
            except BaseException as e:  # installed already: a config_change must not undo it
                if isinstance(e, asyncio.CancelledError):
                    raise
                log.error("installed %s, but config_change raised %s: %s", vsn, type(e).__name__, e)
        t_end = time.perf_counter()
        total = (t_end - t0) * 1000
        log.info(
            "installed %s (from %s, %s) in %.1f ms: plan %.1f, checks %.1f, preflight %.1f, "
            "script %.1f",
            vsn,
            previous,
            mode,
            total,
            (t_plan - t0) * 1000,
            (t_check - t_plan) * 1000,
            (t_pre - t_check) * 1000,
            (t_end - t_pre) * 1000,
        )
        if result.restart:
            self._restart("restart_emulator", vsn)
        return {
            "version": vsn,
            "from": previous,
            "mode": mode,
            "other": other,
            "ms": round(total, 3),
            "steps": result.steps,
            "restart": result.restart,
            "touched": result.touched,
        }

    async def _soft_purge_loop(self) -> None:
        # OTP: modules whose post-purge is soft_purge are soft-purged every 10 s
        while self.unpurged:
            await asyncio.sleep(10)
            async with self.lock:  # code loading and purging share the handler's lock
                for m, post in list(self.unpurged.items()):
                    if post == "soft_purge" and self.node.code.soft_purge(m):
                        del self.unpurged[m]
        self._purger = None

    # -- lifecycle ---------------------------------------------------------------------------
    @_evented("make_permanent")
    async def make_permanent(self, vsn: str) -> dict[str, Any]:
        async with self.lock:
            new = self.releases.make_permanent(vsn)
            await self._on_disk(
                lambda: self._commit("make_permanent", vsn, new, store.StartFile(vsn))
            )
            for m, post in list(self.unpurged.items()):
                if post == "brutal_purge":
                    self.node.code.purge(m)
                    del self.unpurged[m]
            log.info("release %s is permanent", vsn)
            return {"version": vsn, "status": "permanent"}

    @_evented("remove", "removed_lib_dirs")
    async def remove(self, vsn: str) -> dict[str, Any]:
        async with self.lock:
            pending = journal.read_journal(self.root)
            if (
                self.releases.get(vsn) is None
                and pending is not None
                and (pending.op, pending.version, pending.state) == ("remove", vsn, "committed")
            ):
                # an earlier remove could not delete everything: finish it
                await self._on_disk(lambda: self._commit("remove", vsn, None))
                libs = [d for d in pending.deleted if d.startswith("lib/")]
                return {"version": vsn, "removed_lib_dirs": libs, "finished": True}
            rels = self.releases.remove(vsn)
            rec = self.releases.require(vsn)
            in_use = rels.lib_dirs_in_use()
            dirs = [a.dir for a in rec.apps] + ([f"lib/{rec.deps}"] if rec.deps else [])
            removed = [d for d in dict.fromkeys(dirs) if d not in in_use]
            deleted = (*removed, f"releases/{vsn}")
            await self._on_disk(lambda: self._commit("remove", vsn, rels, deleted=deleted))
            log.info("removed release %s", vsn)
            return {"version": vsn, "removed_lib_dirs": removed}

    @_evented("reboot_old")
    async def reboot_old(self, vsn: str) -> dict[str, Any]:
        async with self.lock:
            new = self.releases.reboot_old(vsn)
            await self._on_disk(lambda: self._commit("reboot_old", vsn, new, store.StartFile(vsn)))
            self._restart("reboot_old", vsn)
            return {"version": vsn, "status": "permanent", "restarting": True}
