"""Node ops served on the control socket: ping, status, stop, reload, purge, which, rpc."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relhandler.errors import InputError, NoSuchModuleError, ProcessError, UsageError
from relhandler.handler.importguard import NotShippedError
from relhandler.handler.reload import reload_module
from relhandler.runtime import Node
from relhandler.runtime.process import remote_function, run_in_process

if TYPE_CHECKING:
    from relhandler.control.daemon import NodeMain
    from relhandler.control.server import Op, Progress

__all__ = ["jsonable", "make_ops"]


def jsonable(value: Any) -> Any:
    """``value`` if JSON can carry it (tuples become lists), else its ``repr``."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


def _module_arg(args: dict[str, Any]) -> str:
    m = args.get("module")
    if not isinstance(m, str) or not m:
        raise UsageError("missing 'module': the dotted name of a managed module")
    return m


def _which(node: Node, name: str) -> dict[str, Any]:
    return asdict(node.code.which(name))


def make_ops(main: NodeMain) -> dict[str, Op]:
    """The node's own ops; the release handler adds its own to the same dict.

    ``reload`` is the shell's ``l/1`` (refused while old code runs), or with ``migrate`` the
    safe reload of :func:`relhandler.handler.reload.reload_module` (``relhandler dev``):
    behaviour processes suspended, migrated by ``code_change`` and resumed, rolled back on
    failure; it answers the :class:`ReloadReport`.

    ``reload``, ``purge`` and an ``rpc`` that has to load its module change the module
    table: they take the release handler's lock, so none of them lands in the middle of an
    install (where code_change would see the wrong old vsn and a rollback would revert it).
    """
    node = main.node

    def code_lock() -> contextlib.AbstractAsyncContextManager[Any]:
        h = main.handler
        return h.lock if h is not None else contextlib.nullcontext()

    async def ping(args: dict[str, Any], progress: Progress) -> Any:
        return {
            "pong": True,
            "release": main.release_version,
            "pid": os.getpid(),
            "boot_id": main.boot_id,
            "boot_failure": main.boot_failure,
        }

    async def status(args: dict[str, Any], progress: Progress) -> Any:
        apps = node.apps.which_applications() if node.apps is not None else []
        run = main.handler.last_install if main.handler is not None else None
        return {
            # the install under way, or the last one this node ran (None: none since boot)
            "install": run.to_wire() if run is not None else None,
            "root": str(main.root),
            "pid": os.getpid(),
            "release": {"name": main.release_name, "version": main.release_version},
            "applications": [{"name": n, "description": d, "version": v} for n, d, v in apps],
            "processes": len(node.processes),
            "uptime_s": round(time.time() - node.started_at, 3),
            "modules_loaded": len(node.code.all_loaded()),
            "events": main.events.status(),
            # the confirm window open, or the last one (None: none since boot)
            "confirm": main.confirmer.status() if main.confirmer is not None else None,
        }

    async def stop(args: dict[str, Any], progress: Progress) -> Any:
        main.request_stop()
        return {"stopping": True}

    async def reload(args: dict[str, Any], progress: Progress) -> Any:
        name = _module_arg(args)
        src = args.get("from")
        if src is not None and args.get("revert"):
            raise UsageError("use either --from FILE or --revert, not both")
        if args.get("migrate"):
            if src is not None or args.get("revert"):
                raise UsageError("--migrate reloads from the code path: drop --from/--revert")
            h = main.handler
            report = await reload_module(
                node,
                name,
                lock=h.lock if h is not None else None,
                request_restart=main.request_restart,
            )
            return report.to_wire()
        file = None
        if src is not None:
            file = Path(str(src))
            if not file.is_file():
                raise InputError(f"--from {file}: no such file")
        async with code_lock():
            node.code.reload(name, file)
            return _which(node, name)

    async def purge(args: dict[str, Any], progress: Progress) -> Any:
        name = _module_arg(args)
        async with code_lock():
            if not node.code.is_loaded(name) and not node.code.has_old(name):
                # OTP's purge answers false; an operator's typo should not look like success
                raise NoSuchModuleError(
                    f"module {name!r} is not loaded; nothing to purge (check the name with "
                    f"`relhandler which {name}`)"
                )
            if args.get("soft"):
                return {"module": name, "purged": node.code.soft_purge(name)}
            return {"module": name, "killed": node.code.purge(name)}

    async def which(args: dict[str, Any], progress: Progress) -> Any:
        return _which(node, _module_arg(args))

    async def rpc(args: dict[str, Any], progress: Progress) -> Any:
        name = _module_arg(args)
        fun = args.get("function")
        fargs = args.get("args", [])
        if not isinstance(fun, str) or not isinstance(fargs, list):
            raise UsageError("rpc needs 'function' (a name) and 'args' (a JSON array)")
        try:
            fn = await remote_function(node, name, fun, code_lock())
        except NotShippedError as e:
            raise UsageError(f"rpc {name}:{fun}: {e}") from e
        except (ImportError, AttributeError) as e:
            raise UsageError(
                f"rpc {name}:{fun}: {e}; check the name with `relhandler which {name}`"
            ) from e
        try:
            return jsonable(await run_in_process(node, fn, *fargs))
        except Exception as e:
            raise ProcessError(
                f"rpc {name}:{fun} raised {type(e).__name__}: {e}", code="rpc_failed"
            ) from e

    return {
        "ping": ping,
        "status": status,
        "stop": stop,
        "reload": reload,
        "purge": purge,
        "which": which,
        "rpc": rpc,
    }
