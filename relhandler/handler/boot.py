"""Boot a node from a release root: which release, its code path, its applications.

The start file names the permanent release; a one-shot ``next_boot`` (reboot_old, a restart
instruction in the middle of an install) wins once and is consumed here, so a crash during
that boot falls back to the permanent release. Before anything is read, an operation a crash
interrupted is finished or undone (:func:`relhandler.handler.journal.recover`).
"""

from __future__ import annotations

import logging
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from relhandler.errors import ConfigError, ReleaseError
from relhandler.handler import journal, store
from relhandler.handler.importguard import ImportGuard, allowed_names, install
from relhandler.release.model import (
    AppSpec,
    ReleaseSpec,
    load_toml,
    read_app,
    read_release,
    read_sys,
)
from relhandler.runtime import Node
from relhandler.runtime.application import AppController

__all__ = [
    "DEV_FILE",
    "BootedRelease",
    "boot",
    "choose_release",
    "dev_dependencies",
    "load_release",
]

DEV_FILE = "dev.toml"
"""A ``relhandler dev`` root's file naming the project's dependencies (not in a tarball)."""

log = logging.getLogger("relhandler.boot")


@dataclass(frozen=True, slots=True)
class BootedRelease:
    """What a node runs: the release, its apps' specs and its lib dirs."""

    root: Path
    release: ReleaseSpec
    apps: tuple[AppSpec, ...]
    env: dict[str, dict[str, object]]

    def lib_dir(self, app: str) -> Path:
        ra = self.release.app(app)
        if ra is None:
            raise ReleaseError(f"application {app!r} is not in release {self.release.version}")
        return self.root / "lib" / ra.dir_name


def choose_release(root: Path, requested: str | None = None) -> str:
    """The version to boot: ``requested``, else start.toml's next_boot (consumed), else
    its permanent release."""
    if requested:
        if not (root / "releases" / requested / "release.toml").is_file():
            known = sorted(
                d.name for d in (root / "releases").glob("*") if (d / "release.toml").is_file()
            )
            raise ConfigError(
                f"--release {requested!r}: no {root}/releases/{requested}/release.toml; "
                f"releases on this root: {', '.join(known) or 'none'}"
            )
        return requested
    start = store.read_start(root)
    if start is None:
        raise ConfigError(
            f"{store.start_path(root)}: not found; is {root} a release root? "
            f"Create one with `relhandler deploy TARBALL --root {root}`"
        )
    if start.next_boot:
        store.write_start(root, store.StartFile(start.permanent))
        return start.next_boot
    return start.permanent


def load_release(root: Path, vsn: str) -> BootedRelease:
    """Read a release's metadata from the root (no code is loaded)."""
    rel_dir = root / "releases" / vsn
    rel = read_release(rel_dir / "release.toml")
    if rel.version != vsn:
        raise ConfigError(f"{rel_dir}/release.toml says version {rel.version!r}, expected {vsn!r}")
    try:
        ok = SpecifierSet(rel.python).contains(platform.python_version())
    except InvalidSpecifier as e:
        raise ConfigError(f"{rel_dir}/release.toml: python {rel.python!r} is not valid") from e
    if not ok:
        raise ReleaseError(
            f"release {vsn} needs Python {rel.python}; this is {platform.python_version()}",
            code="python_mismatch",
        )
    apps = tuple(read_app(root / "lib" / a.dir_name / "app.toml") for a in rel.apps)
    for a, spec in zip(rel.apps, apps, strict=True):
        if (spec.name, spec.version) != (a.name, a.version):
            raise ConfigError(
                f"lib/{a.dir_name}/app.toml is {spec.name} {spec.version}, "
                f"but release {vsn} lists {a.name} {a.version}"
            )
    return BootedRelease(root, rel, apps, read_sys(rel_dir / "sys.toml"))


def dev_dependencies(root: Path) -> list[str]:
    """The requirements a ``relhandler dev`` root imports from relhandler's environment
    (none for a root a release was deployed to)."""
    path = root / DEV_FILE
    if not path.is_file():
        return []
    deps = load_toml(path).get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ConfigError(f"{path}: dependencies must be a list of requirement strings")
    return list(deps)


def code_path(booted: BootedRelease) -> list[Path]:
    return [booted.root / "lib" / a.dir_name for a in booted.release.apps]


async def boot(node: Node, root: Path, *, release: str | None = None) -> BootedRelease:
    """Load and start ``release`` (default: from start.toml) on ``node``."""
    root = root.resolve()
    try:
        journal.recover(root)
    except OSError as e:
        raise ReleaseError(
            f"boot: cannot finish the interrupted operation on {root}: "
            f"{store.describe_os_error(e)}; free space or fix permissions, then start again",
            code="io_error",
        ) from e
    vsn = choose_release(root, release)
    booted = load_release(root, vsn)
    node.code.set_path(code_path(booted))
    if booted.release.deps:
        deps = str(root / "lib" / booted.release.deps)
        if deps not in sys.path:
            sys.path.insert(0, deps)
    # from here on the node imports only what the release ships (and relhandler's runtime)
    install(ImportGuard(root / "lib", allowed_names(dev_dependencies(root)), node.code.owns))
    apps = node.apps if isinstance(node.apps, AppController) else AppController(node)
    for spec in booted.apps:
        apps.load(spec, booted.env.get(spec.name))
    types = {a.name: a.type for a in booted.release.apps}
    for name in apps.start_order([a.name for a in booted.apps]):
        if types[name] in ("load", "none"):
            continue
        await apps.start(name, types[name])
    log.info("booted release %s %s from %s", booted.release.name, vsn, root)
    return booted
