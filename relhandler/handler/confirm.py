"""Confirm or revert: an installed release stays ``current`` (not permanent) for a window;
confirmed, it is made permanent; otherwise the node reverts to the release it came from.

The window belongs to the node, like the install: a task of its own that no client
connection owns, so a client killed during the window changes nothing. It confirms when the
operator says so (``relhandler confirm VSN``), or, with health checks, when every round of
checks passed for the whole window. It reverts at once when a check fails or when more than
``max_crashes`` processes exit with a non-normal reason within ``crash_period`` seconds, and
at the deadline when nothing confirmed it. The revert is a downgrade through the relup; when
no downgrade path exists, or the downgrade fails, the node restarts on the permanent release
(the one it came from: the new one was never made permanent).

A node that restarts during the window boots the permanent release (OTP: a release that was
not made permanent is not booted again): that is a revert too. ``run/confirm.json`` marks a
window open, so the next boot reports it as ``confirm.revert`` with reason ``node_restart``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relhandler.errors import ReleaseError, RelhandlerError, UsageError
from relhandler.handler.events import EventLog, reason_text
from relhandler.handler.install import InstallOptions
from relhandler.release.config import read_verify
from relhandler.runtime import Pid
from relhandler.runtime import exit as exit_process
from relhandler.runtime.process import remote_function, run_in_process

if TYPE_CHECKING:
    from relhandler.handler.release_handler import ReleaseHandler

__all__ = [
    "DEFAULT_CRASH_PERIOD",
    "DEFAULT_HEALTH_INTERVAL",
    "DEFAULT_MAX_CRASHES",
    "HEALTH_TIMEOUT",
    "Confirmer",
    "Window",
    "report_interrupted",
    "run_health",
]

log = logging.getLogger("relhandler.confirm")

DEFAULT_MAX_CRASHES = 3
"""Non-normal process exits tolerated within ``crash_period``; one more reverts."""
DEFAULT_CRASH_PERIOD = 10.0
DEFAULT_HEALTH_INTERVAL = 1.0
"""Seconds between two rounds of health checks during a window."""
HEALTH_TIMEOUT = 5.0
"""Seconds a health check may take; a slower one fails."""
MARKER = "confirm.json"


def _marker(root: Path) -> Path:
    return root / "run" / MARKER


@dataclass(slots=True, eq=False)
class Window:
    """One release waiting for confirmation, or how its window ended (``status`` shows it).

    ``state``: ``pending``, then ``confirmed``, ``reverted`` or ``revert_failed``.
    """

    version: str
    from_vsn: str
    window_s: float
    deadline: float
    health: tuple[str, ...]
    max_crashes: int
    crash_period: float
    health_interval: float
    state: str = "pending"
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    by: str | None = None  # operator | health (confirmed)
    reason: str | None = None  # timeout | health | crashes (reverted)
    how: str | None = None  # downgrade | restart
    detail: str | None = None
    rounds: int = 0  # rounds of health checks that all passed
    crashes: deque[float] = field(default_factory=deque)
    last_health: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    trigger: tuple[str, str] | None = None  # (reason, detail) that ends the window now

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "from": self.from_vsn,
            "state": self.state,
            "window_s": self.window_s,
            "deadline": self.deadline,
            "remaining_s": max(0.0, round(self.deadline - time.time(), 3))
            if self.state == "pending"
            else 0.0,
            "health": list(self.health),
            "health_rounds_passed": self.rounds,
            "max_crashes": self.max_crashes,
            "crash_period_s": self.crash_period,
            "crashes": len(self.crashes),
        }
        for k in ("by", "reason", "how", "detail", "ended_at"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        if self.last_health:
            out["last_health"] = self.last_health
        return out


async def run_health(
    h: ReleaseHandler, checks: tuple[str, ...], *, timeout: float = HEALTH_TIMEOUT
) -> list[dict[str, Any]]:
    """Run each ``module:function`` in a fresh process on the node, one after the other; a
    ``health`` event per check. One passes when it returns anything but ``False`` without
    raising within ``timeout`` (``relhandler verify``'s rule)."""
    out = []
    for check in checks:
        t0 = time.perf_counter()
        error: str | None = None
        pids: list[Pid] = []
        try:
            r = await asyncio.wait_for(_call(h, check, pids), timeout)
            took = time.perf_counter() - t0
            if took > timeout:
                # a sync check cannot be interrupted on the loop: its overrun is found when
                # it returns (as a sync code_change's is), and fails it like any error
                error = f"took {took:.1f}s, over its {timeout:g}s timeout"
            elif r is False:
                error = "returned False"
        except TimeoutError:
            error = f"no answer within {timeout:g}s"
            for pid in pids:  # a check that hangs does not stay behind
                with contextlib.suppress(RelhandlerError):
                    h.node.bind()
                    exit_process(pid, "kill")
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # SystemExit from a check is a failed check
            error = reason_text(e)
        ms = round((time.perf_counter() - t0) * 1000, 3)
        row: dict[str, Any] = {"check": check, "ok": error is None, "ms": ms}
        if error is not None:
            row["error"] = error
        h.events.emit("health", version=h.current, **row)
        out.append(row)
    return out


async def _call(h: ReleaseHandler, check: str, pids: list[Pid]) -> Any:
    mod, _, fun = check.partition(":")
    try:
        fn = await remote_function(h.node, mod, fun, h.lock)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"health check {check}: {e}") from e
    return await run_in_process(h.node, fn, initial_call=f"health {check}", spawned=pids)


def report_interrupted(root: Path, events: EventLog, booted: str) -> dict[str, Any] | None:
    """At boot: a window the previous run left open (``run/confirm.json``) ended with that
    run. The node booted the permanent release, so it reverted; say so, once."""
    path = _marker(root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = {}
    with contextlib.suppress(OSError):
        path.unlink()
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        return None
    vsn = data["version"]
    ok = booted != vsn
    events.emit(
        "confirm.revert",
        version=vsn,
        to=booted,
        reason="node_restart",
        how="restart",
        detail="the node restarted during the confirm window and booted the permanent release",
        ok=ok,
    )
    return {**data, "state": "reverted" if ok else "revert_failed", "reason": "node_restart"}


class Confirmer:
    """The confirm windows of one node (at most one open at a time)."""

    def __init__(self, h: ReleaseHandler) -> None:
        self.h = h
        self.window: Window | None = None  # the open window, or the last one
        self.interrupted: dict[str, Any] | None = None  # a window the last run left open

    @property
    def pending(self) -> Window | None:
        w = self.window
        return w if w is not None and w.state == "pending" else None

    def refuse_if_pending(self, what: str) -> None:
        """Installs, make-permanent of another release, remove, reboot-old wait for the
        window: the revert needs the node as the window found it."""
        w = self.pending
        if w is not None:
            raise ReleaseError(
                f"{what}: release {w.version} awaits confirmation for "
                f"{max(0.0, w.deadline - time.time()):.0f}s more; `relhandler confirm "
                f"{w.version}` or wait for the window to end",
                code="confirm_pending",
            )

    def status(self) -> dict[str, Any] | None:
        if self.window is not None:
            return self.window.to_wire()
        return self.interrupted

    def open(
        self,
        vsn: str,
        from_vsn: str,
        within: float,
        *,
        health: bool,
        max_crashes: int | None = None,
        crash_period: float | None = None,
    ) -> Window:
        """Start the window for ``vsn``, just installed over ``from_vsn``."""
        cfg = read_verify(self.h.root / "releases" / vsn)
        # (confirm_ops refuses --health without checks before the install)
        checks = tuple(cfg.health) if cfg is not None and health else ()
        mc = max_crashes if max_crashes is not None else DEFAULT_MAX_CRASHES
        cp = crash_period if crash_period is not None else DEFAULT_CRASH_PERIOD
        if cfg is not None:
            mc = cfg.max_crashes if max_crashes is None and cfg.max_crashes is not None else mc
            cp = cfg.crash_period if crash_period is None and cfg.crash_period is not None else cp
        interval = DEFAULT_HEALTH_INTERVAL
        if cfg is not None and cfg.health_interval is not None:
            interval = cfg.health_interval
        w = Window(
            vsn,
            from_vsn,
            within,
            time.time() + within,
            checks,
            mc,
            cp,
            min(interval, within),
        )
        self.window = w
        self.interrupted = None
        self._write_marker(w)
        self.h.events.emit(
            "confirm.pending",
            version=vsn,
            **{"from": from_vsn},
            window_s=within,
            deadline=w.deadline,
            health=list(checks),
            max_crashes=mc,
            crash_period_s=cp,
        )
        self.h.events.listeners.append(self._on_event)
        w.task = asyncio.get_running_loop().create_task(self._run(w), name=f"confirm {vsn}")
        w.task.add_done_callback(_retrieve)
        return w

    async def confirm(self, vsn: str) -> dict[str, Any]:
        """The operator confirms ``vsn``: make it permanent, close the window."""
        w = self.window
        if w is None or w.version != vsn or w.state != "pending":
            if w is not None and w.version == vsn and w.state == "confirmed":
                return {**w.to_wire(), "already": True}
            if w is not None and w.version == vsn:
                raise ReleaseError(
                    f"release {vsn} was not confirmed in time: the window ended {w.state} "
                    f"({w.reason}: {w.detail}); nothing to confirm",
                    code="not_pending",
                )
            raise ReleaseError(
                f"no confirmation of {vsn} is pending"
                + (f" (the pending one is {self.pending.version})" if self.pending else "")
                + "; `relhandler status` shows the last window",
                code="not_pending",
            )
        w.trigger = ("operator", "confirmed by the operator")
        w.wake.set()
        assert w.task is not None
        await asyncio.shield(w.task)
        if w.state != "confirmed":
            raise ReleaseError(
                f"release {vsn} could not be confirmed: {w.detail}", code="confirm_failed"
            )
        return w.to_wire()

    # -- the window ----------------------------------------------------------------------
    def _on_event(self, ev: dict[str, Any]) -> None:
        w = self.pending
        if w is None or ev.get("kind") != "process.exit" or w.trigger is not None:
            return
        now = time.time()
        w.crashes.append(now)
        while w.crashes and w.crashes[0] < now - w.crash_period:
            w.crashes.popleft()
        if len(w.crashes) > w.max_crashes:
            data = ev.get("data") or {}
            w.trigger = (
                "crashes",
                f"{len(w.crashes)} processes exited abnormally within {w.crash_period:g}s "
                f"(more than {w.max_crashes}); the last: {data.get('pid')} "
                f"{data.get('initial_call')} {data.get('reason')}",
            )
            w.wake.set()

    async def _run(self, w: Window) -> None:
        try:
            await self._watch(w)
        finally:
            with contextlib.suppress(ValueError):
                self.h.events.listeners.remove(self._on_event)
        if w.trigger is not None and w.trigger[0] == "operator":
            await self._confirm(w, "operator")
        elif w.trigger is None and w.health:
            await self._confirm(w, "health")
        else:
            reason, detail = w.trigger or ("timeout", f"not confirmed within {w.window_s:g}s")
            await self._revert(w, reason, detail)
        w.ended_at = time.time()
        with contextlib.suppress(OSError):
            _marker(self.h.root).unlink()

    async def _watch(self, w: Window) -> None:
        """Until the deadline or a trigger: a round of health checks every interval; the
        last round runs at the deadline (the window passes only if it passes too)."""
        while not _triggered(w):
            if w.health and not await self._round(w):
                return
            left = w.deadline - time.time()
            if left <= 0:
                return
            wait = min(left, w.health_interval) if w.health else left
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.wake.wait(), wait)

    async def _round(self, w: Window) -> bool:
        rows = await run_health(self.h, w.health)
        w.last_health = rows
        bad = [r for r in rows if not r["ok"]]
        if bad:
            if not _triggered(w):  # an operator's confirm during the round wins
                w.trigger = ("health", f"{bad[0]['check']}: {bad[0]['error']}")
            return False
        w.rounds += 1
        return True

    async def _confirm(self, w: Window, by: str) -> None:
        try:
            await self.h.make_permanent(w.version)
        except RelhandlerError as e:
            # not permanent: the window did not confirm it, so it reverts
            w.by = None
            await self._revert(w, "timeout", f"make-permanent failed: {e.message}")
            w.detail = f"make-permanent failed: {e.message}"
            return
        w.state = "confirmed"
        w.by = by
        w.detail = (
            "confirmed by the operator"
            if by == "operator"
            else (f"every health check passed for {w.window_s:g}s ({w.rounds} rounds)")
        )
        self.h.events.emit("confirm.confirmed", version=w.version, by=by, ok=True)
        log.info("release %s confirmed (%s); it is permanent", w.version, by)

    async def _revert(self, w: Window, reason: str, detail: str) -> None:
        w.reason = reason
        w.detail = detail
        log.warning("reverting %s to %s: %s", w.version, w.from_vsn, detail)
        h = self.h
        try:
            h._script(w.from_vsn)  # is there a downgrade path?
        except RelhandlerError as e:
            self._restart(w, f"{detail}; no downgrade path ({e.message})")
            return
        try:
            await h.install(w.from_vsn, InstallOptions(code_change_timeout=None))
        except RelhandlerError as e:
            if h.current == w.from_vsn:  # the downgrade itself went through
                pass
            else:
                self._restart(w, f"{detail}; the downgrade failed ({e.message})")
                return
        w.state = "reverted"
        w.how = "downgrade"
        h.events.emit(
            "confirm.revert",
            version=w.version,
            to=w.from_vsn,
            reason=reason,
            how="downgrade",
            detail=detail,
            ok=True,
        )

    def _restart(self, w: Window, detail: str) -> None:
        h = self.h
        perm = h.releases.permanent
        to = perm.version if perm is not None else w.from_vsn
        w.state = "reverted"
        w.how = "restart"
        w.detail = detail
        h.events.emit(
            "confirm.revert",
            version=w.version,
            to=to,
            reason=w.reason or "timeout",
            how="restart",
            detail=detail,
            ok=True,
        )
        with contextlib.suppress(OSError):
            _marker(h.root).unlink()  # this restart is the revert itself, already reported
        h._restart("revert", to)

    def _write_marker(self, w: Window) -> None:
        path = _marker(self.h.root)
        data = {"version": w.version, "from": w.from_vsn, "deadline": w.deadline}
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)
        except OSError as e:  # the window works without it; only the report after a crash
            log.warning("cannot write %s (%s)", path, reason_text(e))


def _triggered(w: Window) -> bool:
    return w.trigger is not None  # a function: the trigger changes across awaits


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("confirm window failed", exc_info=task.exception())
