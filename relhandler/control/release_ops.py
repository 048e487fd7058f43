"""The release handler's ops on the control socket."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relhandler.errors import UsageError
from relhandler.handler.boot import BootedRelease
from relhandler.handler.install import InstallOptions
from relhandler.handler.release_handler import ReleaseHandler

if TYPE_CHECKING:
    from relhandler.control.daemon import NodeMain
    from relhandler.control.server import Op, Progress

__all__ = ["register"]


def _vsn(args: dict[str, Any]) -> str:
    v = args.get("version")
    if not isinstance(v, str) or not v:
        raise UsageError("missing 'version'")
    return v


def _timeout(args: dict[str, Any], key: str) -> float | None:
    """Seconds; None if not given; ``math.inf`` for ``"infinity"``."""
    v = args.get(key)
    if v is None:
        return None
    if v == "infinity":
        return math.inf
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or v <= 0:
        raise UsageError(f"{key} must be a number of seconds > 0 or 'infinity', got {v!r}")
    return float(v)


def _options(args: dict[str, Any]) -> InstallOptions:
    return InstallOptions(
        suspend_timeout=_timeout(args, "suspend_timeout"),
        code_change_timeout=_timeout(args, "code_change_timeout"),
        dry_run=bool(args.get("dry_run", False)),
    )


def register(ops: dict[str, Op], main: NodeMain) -> None:
    """Attach a ReleaseHandler to the node and add its ops."""
    assert main.booted is not None

    def on_current(booted: BootedRelease) -> None:
        main.booted = booted  # `status` and `ping` say what runs, whoever waits for the reply

    h = ReleaseHandler(
        main.node,
        main.root,
        main.booted,
        main.request_restart,
        on_current=on_current,
        events=main.events,
    )
    main.handler = h

    async def releases(args: dict[str, Any], progress: Progress) -> Any:
        return h.which_releases()

    async def unpack(args: dict[str, Any], progress: Progress) -> Any:
        path = args.get("tarball")
        if not isinstance(path, str):
            raise UsageError("missing 'tarball' (a path the node can read)")
        return await h.unpack(Path(path))

    async def check_install(args: dict[str, Any], progress: Progress) -> Any:
        return await h.check_install(_vsn(args), _options(args))

    async def install(args: dict[str, Any], progress: Progress) -> Any:
        result = await h.install(_vsn(args), _options(args), progress)
        if isinstance(result, dict) and result.get("restart") and not result.get("dry_run"):
            # the CLI waits for a node with another boot id (a re-exec keeps the OS pid)
            result = {**result, "boot_id": main.boot_id}
        return result

    async def make_permanent(args: dict[str, Any], progress: Progress) -> Any:
        return await h.make_permanent(_vsn(args))

    async def remove(args: dict[str, Any], progress: Progress) -> Any:
        return await h.remove(_vsn(args))

    async def reboot_old(args: dict[str, Any], progress: Progress) -> Any:
        return await h.reboot_old(_vsn(args))

    ops.update(
        {
            "releases": releases,
            "unpack": unpack,
            "check_install": check_install,
            "install": install,
            "make_permanent": make_permanent,
            "remove": remove,
            "reboot_old": reboot_old,
        }
    )
