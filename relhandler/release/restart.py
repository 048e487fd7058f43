"""What a restart-type upgrade loses, said before it happens (issue 16.3).

An upgrade whose relup restarts the node (``restart_new_emulator``: bundled dependencies or
the Python requirement changed; ``restart_emulator``) boots the new release fresh: every
process's state and every connection is lost. This module names *why* (the dependencies
that changed, with their versions, read from the releases' ``*.dist-info``) and, offline,
*what* runs there as far as the release's sources show it: each application and the
supervisors it starts with their children's ids (``check``). The node lists its live
processes itself (``install --dry-run``, ``upgrade``).
"""

from __future__ import annotations

import email.parser
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relhandler.release.appup_gen import supervision
from relhandler.release.model import ReleaseSpec

__all__ = [
    "RESTART_INSTRUCTIONS",
    "DepChange",
    "RestartReport",
    "dep_changes",
    "describe_static",
    "dist_versions",
    "restart_report",
    "restarts",
    "static_processes",
]

RESTART_INSTRUCTIONS = frozenset({"restart_new_emulator", "restart_emulator"})
"""Relup instructions after which the node runs the new release in a fresh process."""


def restarts(instructions: Sequence[Any]) -> bool:
    """Whether a relup entry's instructions restart the node."""
    return any(
        (i[0] if isinstance(i, list | tuple) and i else i) in RESTART_INSTRUCTIONS
        for i in instructions
    )


@dataclass(frozen=True, slots=True)
class DepChange:
    """A bundled distribution added (``old`` None), removed (``new`` None) or changed."""

    name: str
    old: str | None
    new: str | None

    def describe(self) -> str:
        if self.old is None:
            return f"{self.name} {self.new} added"
        if self.new is None:
            return f"{self.name} {self.old} removed"
        return f"{self.name} {self.old} → {self.new}"

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "from": self.old, "to": self.new}


def dist_versions(deps_dir: Path | None) -> dict[str, str]:
    """``{distribution name: version}`` of what a bundled-deps dir holds (its dist-infos;
    names as their metadata spells them)."""
    out: dict[str, str] = {}
    if deps_dir is None or not deps_dir.is_dir():
        return out
    parser = email.parser.HeaderParser()
    for info in sorted(deps_dir.glob("*.dist-info")):
        try:
            meta = parser.parsestr((info / "METADATA").read_text(errors="replace"))
        except OSError:
            continue
        name, version = meta.get("Name"), meta.get("Version")
        if name and version:
            out[str(name)] = str(version)
    return out


def _deps_dir(lib: Path, spec: ReleaseSpec) -> Path | None:
    return lib / spec.deps if spec.deps else None


def dep_changes(
    old: ReleaseSpec, old_lib: Path, new: ReleaseSpec, new_lib: Path
) -> list[DepChange]:
    """The bundled distributions that differ between two releases (``lib`` is each one's
    ``ROOT/lib``), by name."""
    a = dist_versions(_deps_dir(old_lib, old))
    b = dist_versions(_deps_dir(new_lib, new))
    return [
        DepChange(n, a.get(n), b.get(n))
        for n in sorted(a.keys() | b.keys())
        if a.get(n) != b.get(n)
    ]


@dataclass(frozen=True, slots=True)
class RestartReport:
    """Why an upgrade ``old`` → ``new`` restarts the node."""

    old: str
    new: str
    deps: tuple[DepChange, ...]
    python: tuple[str, str] | None  # the requirement before and after, if it changed
    instruction: str

    def reasons(self) -> list[str]:
        out = [f"bundled dependency {d.describe()}" for d in self.deps]
        if self.python is not None:
            out.append(f"Python requirement {self.python[0]} → {self.python[1]}")
        if not out:
            out.append(f"the relup says {self.instruction}")
        return out

    def to_wire(self) -> dict[str, Any]:
        return {
            "from": self.old,
            "to": self.new,
            "instruction": self.instruction,
            "dependencies": [d.to_wire() for d in self.deps],
            "python": list(self.python) if self.python else None,
            "reasons": self.reasons(),
        }


def restart_report(
    old: ReleaseSpec, old_lib: Path, new: ReleaseSpec, new_lib: Path, instructions: Sequence[Any]
) -> RestartReport | None:
    """Why ``instructions`` (the relup entry ``old`` → ``new``) restart the node, or None
    when they do not."""
    if not restarts(instructions):
        return None
    tag = next(
        str(i[0] if isinstance(i, list | tuple) else i)
        for i in instructions
        if (i[0] if isinstance(i, list | tuple) and i else i) in RESTART_INSTRUCTIONS
    )
    deps = tuple(dep_changes(old, old_lib, new, new_lib)) if old.deps != new.deps else ()
    py = (old.python, new.python) if old.python != new.python else None
    return RestartReport(old.version, new.version, deps, py, tag)


def static_processes(spec: ReleaseSpec, lib: Path, apps: dict[str, Any]) -> list[dict[str, Any]]:
    """What the release runs as far as its sources show: per application, the supervisors
    it starts (registered name, module) and their children's ids. ``apps`` maps each app
    name to its ``AppSpec``."""
    out: list[dict[str, Any]] = []
    for a in spec.apps:
        app_spec = apps.get(a.name)
        sups = supervision(app_spec, lib / a.dir_name) if app_spec is not None else []
        out.append(
            {
                "application": a.name,
                "supervisors": [
                    {"name": name, "module": mod, "children": children}
                    for mod, name, children in sups
                ],
            }
        )
    return out


def describe_static(procs: list[dict[str, Any]]) -> str:
    """One line: ``application X: supervisor N (M) with children a, b; ...``."""
    parts = []
    for p in procs:
        sups = [
            f"supervisor {s['name'] or s['module']}"
            + (f" ({s['module']})" if s["name"] else "")
            + (f" with children {', '.join(map(str, s['children']))}" if s["children"] else "")
            for s in p["supervisors"]
        ]
        parts.append(f"application {p['application']}" + (f": {'; '.join(sups)}" if sups else ""))
    return "; ".join(parts)
