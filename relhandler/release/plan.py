"""Relups from releases: which apps were added, removed or changed → scripts → translation.

A release is read from a built release root (``_build/rel/<name>/``) or from a tarball (so a
CI pipeline can use the previous release's artefact). The concatenation order of the
per-application scripts is OTP 25's (otp/semantics.md §5.3): added apps, appup scripts in the
new release's app order, removed apps; several ``--from`` releases give entries in reverse
order of the command line, as ``systools:make_relup`` does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relhandler.errors import AppupError, ConfigError, TranslationError
from relhandler.release.appup import Appup, read_appup, select
from relhandler.release.appup_gen import library_appup
from relhandler.release.model import AppSpec, ReleaseSpec, read_app, read_release
from relhandler.release.relup import AppInfo, Relup, RelupEntry, translate_scripts
from relhandler.release.sources import shown
from relhandler.release.tarball import extract_into, verify_tarball

__all__ = [
    "DepUpgrade",
    "Plan",
    "ReleaseSource",
    "cycle_warning",
    "dep_mods_cycle",
    "dep_upgrades",
    "open_release",
    "plan_relup",
]


@dataclass(frozen=True, slots=True)
class ReleaseSource:
    """A release read from disk: its spec, its apps' specs, where its lib dirs are."""

    root: Path
    spec: ReleaseSpec
    apps: dict[str, AppSpec]

    @property
    def version(self) -> str:
        return self.spec.version

    def lib_dir(self, app: str) -> Path:
        a = self.spec.app(app)
        assert a is not None
        return self.root / "lib" / a.dir_name

    def app_infos(self) -> list[AppInfo]:
        return [
            AppInfo(a.name, a.version, tuple(self.apps[a.name].modules), a.type)
            for a in self.spec.apps
        ]

    def appup(self, app: str) -> Appup:
        a = self.spec.app(app)
        assert a is not None
        path = self.lib_dir(app) / f"{app}.appup.toml"
        return read_appup(path, shown_as=shown(path))


_tmpdirs: list[tempfile.TemporaryDirectory[str]] = []


def open_release(
    *, root: Path | None = None, version: str | None = None, tarball: Path | None = None
) -> ReleaseSource:
    """Read a release from a release root + version, or from a tarball."""
    if tarball is not None:
        v = verify_tarball(tarball)
        tmp = tempfile.TemporaryDirectory(prefix="relhandler-plan-")
        _tmpdirs.append(tmp)  # kept for the life of the process: sources read lazily
        base = Path(tmp.name)
        extract_into(v, base, durable=False)
        root, version = base, v.version
    if root is None or version is None:
        raise ConfigError("a release is given as a release root and version, or a tarball")
    rel_file = root / "releases" / version / "release.toml"
    if not rel_file.exists():
        known = sorted(p.name for p in (root / "releases").glob("*") if p.is_dir())
        raise ConfigError(
            f"no release {version} in {root} (found: {', '.join(known) or 'none'}); "
            f"build it first or pass its tarball with --from-tarball"
        )
    spec = read_release(rel_file)
    apps = {a.name: read_app(root / "lib" / a.dir_name / "app.toml") for a in spec.apps}
    return ReleaseSource(root, spec, apps)


@dataclass(frozen=True, slots=True)
class DepUpgrade:
    """A bundled distribution that differs between two releases, and how it is upgraded."""

    name: str
    old: str | None  # version; None: added
    new: str | None  # None: removed
    hot: bool  # its modules are loaded in place; the node keeps running
    why: str

    def line(self) -> str:
        vsns = f"{self.old or '(none)'} → {self.new or '(none)'}"
        return f"dependency {self.name} {vsns}: {'hot' if self.hot else 'restart'} ({self.why})"


def dep_upgrades(new: ReleaseSource, old: ReleaseSource) -> list[DepUpgrade]:
    """Each bundled distribution changed from ``old`` to ``new``: hot (loaded through the
    code server) or restart, and why."""
    n, o = new.spec, old.spec
    if n.dists is None or o.dists is None:
        if n.deps == o.deps:
            return []
        unrecorded = old.version if o.dists is None else new.version
        return [
            DepUpgrade(
                "(bundled dependencies)",
                o.deps,
                n.deps,
                False,
                f"release {unrecorded} does not list its bundled packages",
            )
        ]
    names = sorted({d.name for d in (*n.dists, *o.dists)})
    out = []
    for name in names:
        a, b = o.dist(name), n.dist(name)
        if a is not None and b is not None and (a.version, a.hot) == (b.version, b.hot):
            continue
        was, now = (a.version if a else None), (b.version if b else None)
        either = [d for d in (a, b) if d is not None]
        if n.python != o.python:
            hot, why = False, "the Python requirement changed"
        elif any(d.compiled for d in either):
            hot, why = False, "it has compiled extensions"
        elif not all(d.hot for d in either):
            hot, why = False, "not in hot_deps"
        else:
            hot, why = True, "pure Python, in hot_deps: loaded through the code server"
        out.append(DepUpgrade(name, was, now, hot, why))
    if n.deps != o.deps:
        for i, c in enumerate(out):
            if c.hot:
                out[i] = DepUpgrade(
                    c.name, c.old, c.new, False, "hot, but the node restarts for the others"
                )
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    relup: Relup
    warnings: tuple[str, ...] = field(default_factory=tuple)


def cycle_warning(where: str, cycle: Sequence[str]) -> str:
    return (
        f"{where}: dep_mods form a cycle ({' → '.join(cycle)}); the relup still orders "
        f"them, as OTP does, but one of them is loaded before a module it depends on"
    )


def dep_mods_cycle(instructions: Sequence[Any]) -> list[str] | None:
    """A cycle in the ``dep_mods`` of an appup script (``[a, b, a]``), or None."""
    deps: dict[str, list[str]] = {}
    for i in instructions:
        if isinstance(i, list | tuple) and len(i) >= 2 and isinstance(i[1], str):
            opts = i[-1] if isinstance(i[-1], dict) else {}
            d = opts.get("dep_mods", [])
            deps.setdefault(i[1], []).extend(x for x in d if isinstance(x, str))
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for start in deps:
        if state.get(start):
            continue
        path = [start]
        stack = [iter(deps.get(start, []))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps.get(nxt, [])))
    return None


def _scripts(
    direction: str, new: ReleaseSource, old: ReleaseSource, warnings: list[str]
) -> list[list[Any]]:
    """The per-application scripts for ``new``→``old`` (down) or ``old``→``new`` (up)."""
    scripts: list[list[Any]] = []
    to, frm = (new, old) if direction == "up" else (old, new)
    # added apps (in the target), with the target's start type
    for a in to.spec.apps:
        if frm.spec.app(a.name) is None:
            scripts.append([["add_application", a.name, {"type": a.type}]])
    # changed apps: always the *new* release's appup, keyed by the old app version
    for a in new.spec.apps:
        oa = old.spec.app(a.name)
        if oa is None or oa.version == a.version:
            continue
        if new.spec.is_hot_dep(a.name):
            # a hot dependency is a library application: its changed modules are loaded
            lib = library_appup(
                old.apps[a.name], old.lib_dir(a.name), new.apps[a.name], new.lib_dir(a.name)
            )
            scripts.append(lib[direction][0]["instructions"])
            continue
        appup = new.appup(a.name)
        if appup.version != a.version:
            warnings.append(
                f"{a.name}: appup version {appup.version!r} differs from the app version "
                f"{a.version!r}"
            )
        entries = appup.up if direction == "up" else appup.down
        entry = select(entries, oa.version)
        if entry is None:
            raise AppupError(
                f"{appup.path}: no [[{direction}]] entry matches {a.name} {oa.version} "
                f"(upgrading {a.name} {oa.version} → {a.version}); add one with "
                f'{"from" if direction == "up" else "to"} = "{oa.version}"',
                code="no_relup",
            )
        scripts.append(list(entry.instructions))
        cycle = dep_mods_cycle(entry.instructions)
        if cycle:
            warnings.append(cycle_warning(str(appup.path), cycle))
    # removed apps (only in the source)
    for a in frm.spec.apps:
        if to.spec.app(a.name) is None:
            scripts.append([["remove_application", a.name]])
    if new.spec.deps != old.spec.deps or new.spec.python != old.spec.python:
        warnings.append(
            f"{old.version} ↔ {new.version}: bundled dependencies or the Python requirement "
            f"changed; the node restarts on the new release (state is not carried)"
        )
        scripts.insert(0, ["restart_new_emulator"])
    return scripts


def _translate(
    direction: str, scripts: list[list[Any]], to: ReleaseSource, frm: ReleaseSource
) -> list[Any]:
    try:
        return translate_scripts(
            "up" if direction == "up" else "down", scripts, to.app_infos(), frm.app_infos()
        )
    except TranslationError as e:
        raise TranslationError(
            f"relup {frm.version} → {to.version}: {e.message}", reason=e.reason
        ) from None


def plan_relup(new: ReleaseSource, olds: Sequence[ReleaseSource]) -> Plan:
    """One ``up`` and one ``down`` entry per old release."""
    warnings: list[str] = []
    ups: list[RelupEntry] = []
    downs: list[RelupEntry] = []
    for old in olds:
        if old.version == new.version:
            ups.append(RelupEntry(old.version, "", (["point_of_no_return"],)))
            downs.append(RelupEntry(old.version, "", (["point_of_no_return"],)))
            continue
        up = _translate("up", _scripts("up", new, old, warnings), new, old)
        down = _translate("down", _scripts("down", new, old, warnings), old, new)
        ups.append(RelupEntry(old.version, "", tuple(up)))
        downs.append(RelupEntry(old.version, "", tuple(down)))
    # systools:make_relup lists the last given base release first
    return Plan(
        Relup(new.version, tuple(reversed(ups)), tuple(reversed(downs))),
        tuple(dict.fromkeys(warnings)),
    )
