"""Confirm-or-revert ops on the control socket (handler/confirm.py does the work).

``install`` takes ``confirm_within`` (seconds) and ``health`` (bool): the window opens in
the node, in the same task that installs, so a client gone after the install was accepted
still gets its window. ``confirm`` confirms, ``confirm_wait`` waits for the window to end,
``health`` runs the running release's health checks once. While a window is open, installs,
remove and reboot-old are refused (``confirm_pending``); make-permanent of the pending
release is a confirmation.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from relhandler.errors import ReleaseError, UsageError
from relhandler.handler.confirm import Confirmer, report_interrupted, run_health
from relhandler.release.config import read_verify

if TYPE_CHECKING:
    from relhandler.control.daemon import NodeMain
    from relhandler.control.server import Op, Progress

__all__ = ["register"]

RESTARTS = ("restart_new_emulator", "restart_emulator")


def _vsn(args: dict[str, Any]) -> str:
    v = args.get("version")
    if not isinstance(v, str) or not v:
        raise UsageError("missing 'version'")
    return v


def _within(args: dict[str, Any]) -> float | None:
    v = args.get("confirm_within")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not (0 < v < math.inf):
        raise UsageError(f"--confirm-within must be a number of seconds > 0, got {v!r}")
    return float(v)


def register(ops: dict[str, Op], main: NodeMain) -> None:
    """Wrap the release handler's ops with the confirm window; add confirm, confirm_wait
    and health."""
    h = main.handler
    c = Confirmer(h)
    main.confirmer = c
    plain_install = ops["install"]
    plain_permanent = ops["make_permanent"]

    def boot_report() -> None:
        c.interrupted = report_interrupted(main.root, main.events, h.current)

    main.confirm_boot_report = boot_report

    def check(vsn: str, health: bool) -> None:
        """Refuse, before anything changes, a window that cannot work."""
        if health:
            cfg = read_verify(main.root / "releases" / vsn) if h.releases.get(vsn) else None
            if h.releases.get(vsn) is not None and (cfg is None or not cfg.health):
                raise UsageError(
                    f"--health: release {vsn} declares no health checks; add health = "
                    f'["pkg.module:function"] to [tool.relhandler.verify] and rebuild it, or '
                    f"drop --health"
                )
        if h.releases.get(vsn) is None or vsn == h.current:
            return  # the install refuses it with its own message
        script, _mode, _other = h._script(vsn)
        restart = next((t for t in script if t in RESTARTS), None)
        if restart is not None:
            raise UsageError(
                f"--confirm-within: the upgrade to {vsn} restarts the node ({restart}); a "
                f"confirm window needs a hot upgrade (a restart boots the permanent release); "
                f"upgrade without --confirm-within"
            )

    async def install(args: dict[str, Any], progress: Progress) -> Any:
        vsn = _vsn(args)
        within = _within(args)
        w = c.pending
        if within is not None and w is not None and w.version == vsn:
            return {"version": vsn, "already": True, "confirm": w.to_wire()}  # a retry
        c.refuse_if_pending(f"install {vsn}")
        if within is None or args.get("dry_run"):
            return await plain_install(args, progress)
        health = bool(args.get("health", False))
        check(vsn, health)

        async def body() -> Any:
            result = await plain_install(args, progress)
            win = c.open(vsn, result["from"], within, health=health)
            return {**result, "confirm": win.to_wire()}

        # the window opens in the node even if this connection is gone by then
        task = asyncio.get_running_loop().create_task(body(), name=f"install {vsn} + confirm")
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(task)

    async def make_permanent(args: dict[str, Any], progress: Progress) -> Any:
        vsn = _vsn(args)
        w = c.pending
        if w is not None and w.version == vsn:
            return await c.confirm(vsn)
        c.refuse_if_pending(f"make-permanent {vsn}")
        return await plain_permanent(args, progress)

    def refusing(name: str, op: Op) -> Op:
        async def wrapped(args: dict[str, Any], progress: Progress) -> Any:
            c.refuse_if_pending(f"{name.replace('_', '-')} {args.get('version')}")
            return await op(args, progress)

        return wrapped

    async def confirm(args: dict[str, Any], progress: Progress) -> Any:
        return await c.confirm(_vsn(args))

    async def confirm_wait(args: dict[str, Any], progress: Progress) -> Any:
        vsn = _vsn(args)
        w = c.window
        if w is None or w.version != vsn:
            raise ReleaseError(
                f"no confirm window for {vsn} since the node booted", code="not_pending"
            )
        if w.task is not None:
            await asyncio.shield(w.task)
        return w.to_wire()

    async def health(args: dict[str, Any], progress: Progress) -> Any:
        given = args.get("checks")  # verify names them: it may use the other release's
        if given is not None:
            if not isinstance(given, list) or not all(isinstance(c, str) for c in given):
                raise UsageError("health: 'checks' must be a list of 'module:function' strings")
            checks = tuple(given)
        else:
            cfg = read_verify(main.root / "releases" / h.current)
            checks = tuple(cfg.health) if cfg is not None else ()
        rows = await run_health(h, checks)
        return {"version": h.current, "checks": rows, "ok": all(r["ok"] for r in rows)}

    ops.update(
        {
            "install": install,
            "make_permanent": make_permanent,
            "remove": refusing("remove", ops["remove"]),
            "reboot_old": refusing("reboot_old", ops["reboot_old"]),
            "confirm": confirm,
            "confirm_wait": confirm_wait,
            "health": health,
        }
    )
