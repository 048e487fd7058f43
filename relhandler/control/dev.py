"""``relhandler dev``: a development node booted straight from a project's source tree,
reloading each module the moment it is saved.

There is no build. The root is a scratch one under ``_build/dev``, made afresh at each
start: a release as ``build`` would describe it (``release.toml``, each application's
``app.toml``, the project's ``sys.toml``), whose lib dirs *link* the project's application
packages instead of holding copies, so the code path is the source tree. The node is the
same program ``relhandler start`` runs (``python -I``, the root as working directory):
nothing from the directory the developer stands in is importable, only the applications'
packages through the code server.

This process watches the packages with ``watchfiles`` and, for every saved module, asks
the node over the control socket for the safe reload of
:func:`relhandler.handler.reload.reload_module` (compile; ``update M advanced`` if the new
code has a ``code_change``, else ``load_module M``; rolled back on failure), printing one
line per reload or the error (file and line) while the node keeps the previous version.
Ctrl-C stops the node in order and removes the root's run files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import tomli_w

from relhandler.control.client import Client
from relhandler.control.daemon import check_not_running, check_socket_path, node_argv
from relhandler.control.server import run_dir
from relhandler.errors import ReleaseError, RelhandlerError, UnreachableError
from relhandler.handler import store
from relhandler.handler.boot import DEV_FILE
from relhandler.handler.reload import summary
from relhandler.handler.unpack import record_of
from relhandler.release.config import BuildConfig, read_config
from relhandler.release.model import (
    AppSpec,
    ReleaseApp,
    ReleaseSpec,
    dump_app,
    dump_release,
    dump_sys,
    load_toml,
    parse_sys,
)

__all__ = ["DEFAULT_DEBOUNCE_MS", "DevRoot", "make_dev_root", "module_of", "run_dev"]

DEFAULT_DEBOUNCE_MS = 50
"""Milliseconds without a new change before a save is reloaded (an editor's writes group)."""
STOP_WAIT = 60.0  # seconds the node may take to stop its applications after Ctrl-C

Say = Callable[[str], None]
_EMPTY = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class DevRoot:
    """The scratch root of a project and the packages it links."""

    root: Path
    config: BuildConfig
    packages: tuple[Path, ...]


def make_dev_root(project: Path) -> DevRoot:
    """Make ``<project>/_build/dev`` afresh: the smallest real release root whose lib dirs
    link the project's application packages. Refused if a node runs there."""
    cfg = read_config(project)
    root = cfg.project_dir / "_build" / "dev"
    check_socket_path(root)
    if root.exists():
        check_not_running(root)
        shutil.rmtree(root)
    rel = ReleaseSpec(
        cfg.name,
        cfg.version,
        cfg.python,
        tuple(ReleaseApp(a.name, a.version, a.type) for a in cfg.apps),  # type: ignore[arg-type]
    )
    for app in cfg.apps:
        d = root / "lib" / f"{app.name}-{app.version}"
        d.mkdir(parents=True)
        (d / app.package).symlink_to(app.path, target_is_directory=True)
        spec = AppSpec(
            app.name, app.version, app.modules, app.applications, app.start, dict(app.env)
        )
        (d / "app.toml").write_text(dump_app(spec))
    rel_dir = root / "releases" / cfg.version
    rel_dir.mkdir(parents=True)
    (rel_dir / "release.toml").write_text(dump_release(rel))
    if cfg.config is not None:
        sys_cfg = parse_sys(load_toml(cfg.config), str(cfg.config))
        (rel_dir / "sys.toml").write_text(dump_sys(sys_cfg))
    # no bundle: the node imports the project's declared dependencies from this environment
    (root / DEV_FILE).write_text(tomli_w.dumps({"dependencies": list(cfg.dependencies)}))
    store.write_releases(root, store.Releases((record_of(rel, "permanent"),)))
    store.write_start(root, store.StartFile(cfg.version))
    return DevRoot(root, cfg, tuple(a.path for a in cfg.apps))


def module_of(packages: Iterable[Path], path: Path) -> str | None:
    """The dotted module a ``.py`` file under one of the packages is, else None."""
    if path.suffix != ".py":
        return None
    for pkg in packages:
        try:
            rel = path.relative_to(pkg)
        except ValueError:
            continue
        parts = [pkg.name, *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        if all(p.isidentifier() for p in parts):
            return ".".join(parts)
    return None


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _sources(packages: Iterable[Path]) -> dict[Path, str | None]:
    return {p: _digest(p) for pkg in packages for p in sorted(pkg.rglob("*.py"))}


def _start_node(root: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    # the node's INFO log (every install step) would bury the reload lines; the user's
    # RELHANDLER_LOG_LEVEL wins
    env.setdefault("RELHANDLER_LOG_LEVEL", "WARNING")
    # same program and isolation as `relhandler start`; stdout and stderr stay on the
    # terminal (the app's prints and warnings), and it shares our process group, so the
    # terminal's Ctrl-C reaches it too
    # the node starts with SIGINT ignored (inherited through exec), so a Ctrl-C during its
    # boot is no KeyboardInterrupt traceback; its loop's own handler takes SIGINT over once
    # it serves, and before that `dev` stops it with SIGTERM
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen(node_argv(root), cwd=root, env=env, stdin=subprocess.DEVNULL)
    finally:
        signal.signal(signal.SIGINT, old)


def _wait_ready(proc: subprocess.Popen[bytes], root: Path, wait: float = 60.0) -> int:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ReleaseError(
                f"the dev node exited during boot (code {proc.returncode}); its error is above",
                code="start_failed",
            )
        with contextlib.suppress(UnreachableError), Client(root, timeout=2.0) as c:
            return int(c.call("ping")["pid"])
        time.sleep(0.05)
    raise ReleaseError(f"the dev node did not answer within {wait}s", code="start_failed")


def _stop_node(proc: subprocess.Popen[bytes], root: Path) -> int:
    """Wait for the node to stop (the terminal's Ctrl-C reached it too; else SIGTERM)."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: keep waiting
    try:
        try:
            return proc.wait(1.0)
        except subprocess.TimeoutExpired:
            proc.terminate()
        try:
            return proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
        shutil.rmtree(run_dir(root), ignore_errors=True)


class _Stop(Exception):
    """SIGTERM to ``relhandler dev``: stop as Ctrl-C does."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _reload(root: Path, module: str, say: Say, warn: Say) -> bool:
    try:
        with Client(root, timeout=120.0) as c:
            res: dict[str, Any] = c.call("reload", {"module": module, "migrate": True})
    except RelhandlerError as e:  # the node gone too: the loop sees it exit
        warn(f"error: {e.message}; the node keeps the previous version of {module}")
        return False
    say(summary(res))
    return True


def run_dev(
    project: Path,
    *,
    debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    say: Say,
    warn: Say,
) -> int:
    """Boot the dev node of ``project``, reload on every save until Ctrl-C; the exit code
    (0 after Ctrl-C or SIGTERM, 1 if the node exited by itself)."""
    import watchfiles

    dev = make_dev_root(project)
    root, cfg = dev.root, dev.config
    known = _sources(dev.packages)  # what the node loads from, at boot
    proc = _start_node(root)
    old_term = signal.signal(signal.SIGTERM, _on_term)
    code = 0
    try:
        pid = _wait_ready(proc, root)
        watching = ", ".join(os.path.relpath(p, cfg.project_dir) for p in dev.packages)
        announced = False
        for changes in watchfiles.watch(
            *dev.packages,
            watch_filter=watchfiles.PythonFilter(),
            step=debounce_ms,
            rust_timeout=200,
            yield_on_timeout=True,
        ):
            if not announced:  # the first timeout: the watcher is running
                say(
                    f"dev node of {cfg.name} {cfg.version} up (pid {pid}, root "
                    f"{os.path.relpath(root, cfg.project_dir)}); watching {watching}; "
                    f"Ctrl-C stops it"
                )
                announced = True
            if proc.poll() is not None:
                warn(f"error: the dev node exited (code {proc.returncode}); its error is above")
                code = 1
                break
            for module, path in sorted(
                {(m, Path(p)) for _c, p in changes if (m := module_of(dev.packages, Path(p)))}
            ):
                digest = _digest(path)
                if digest is None:
                    if known.pop(path, None) is not None:
                        warn(f"{module}: {path.name} was deleted; the node keeps its code")
                    continue
                if known.get(path) == digest:
                    continue  # written with the content the node runs: nothing to load
                if digest == _EMPTY:
                    # an editor that truncates, then writes: an empty module would load
                    # (it is valid Python) and break every process running it
                    warn(f"{module}: {path.name} is empty; not reloaded")
                    continue
                if _reload(root, module, say, warn):
                    known[path] = digest
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        rc = _stop_node(proc, root)
    if code == 0 and rc not in (0, -signal.SIGINT, -signal.SIGTERM):
        warn(f"error: the dev node exited with code {rc} while stopping; its log is above")
        code = 1
    return code
