"""``[tool.relhandler]`` in ``pyproject.toml`` → the build configuration (formats.md §1).

Every problem is collected and reported together, each as ``pyproject.toml:LINE: key: what
is wrong — how to fix it`` (the line is found by searching the file for the key).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from relhandler.errors import ConfigError
from relhandler.release.model import check_name, check_version

__all__ = [
    "AppConfig",
    "BuildConfig",
    "VerifyConfig",
    "discover_modules",
    "read_config",
    "read_verify",
]

RELEASE_KEYS = {
    "name",
    "version",
    "python",
    "applications",
    "include_deps",
    "config",
    "optional_imports",
    "find_links",
    "hot_deps",
}
APP_KEYS = {"path", "version", "start", "applications", "env", "appup"}
VERIFY_KEYS = {
    "calls",
    "load",
    "health",
    "roundtrip_exempt",
    "max_crashes",
    "crash_period",
    "health_interval",
}
START_TYPES = ("permanent", "transient", "temporary", "load", "none")
_MFN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True, slots=True)
class AppConfig:
    """One application to build."""

    name: str
    version: str
    path: Path  # the package directory
    modules: tuple[str, ...]
    start: str | None = None
    applications: tuple[str, ...] = ()
    env: Mapping[str, Any] = field(default_factory=dict)
    appup: Path | None = None
    type: str = "permanent"

    @property
    def package(self) -> str:
        return self.path.name


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    """``[tool.relhandler.verify]``: the hooks ``relhandler verify`` drives a release with.

    ``calls`` are ``(registered process name, request)`` pairs sent with ``gen_server.call``;
    ``load`` and each of ``health`` are ``"module:function"`` run on the node; a module in
    ``roundtrip_exempt`` is not held to ``down(up(state)) == state``. A confirm window
    (``upgrade --confirm-within``) reverts when more than ``max_crashes`` processes exit
    abnormally within ``crash_period`` seconds, and runs ``health`` every
    ``health_interval`` seconds (None: the defaults of handler/confirm.py)."""

    calls: tuple[tuple[str, Any], ...] = ()
    load: str | None = None
    health: tuple[str, ...] = ()
    roundtrip_exempt: tuple[str, ...] = ()
    max_crashes: int | None = None
    crash_period: float | None = None
    health_interval: float | None = None

    def to_toml(self) -> dict[str, Any]:
        """The table as written into the release (``releases/VSN/verify.toml``)."""
        out: dict[str, Any] = {
            "calls": [[n, r] for n, r in self.calls],
            "health": list(self.health),
            "roundtrip_exempt": list(self.roundtrip_exempt),
        }
        if self.load is not None:
            out["load"] = self.load
        for k in ("max_crashes", "crash_period", "health_interval"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out


@dataclass(frozen=True, slots=True)
class BuildConfig:
    """A release project's build configuration."""

    project_dir: Path
    name: str
    version: str
    python: str
    apps: tuple[AppConfig, ...]
    include_deps: bool = True
    dependencies: tuple[str, ...] = ()
    config: Path | None = None
    verify: VerifyConfig | None = None
    optional_imports: tuple[str, ...] = ()
    find_links: tuple[Path, ...] = ()
    hot_deps: tuple[str, ...] = ()  # canonical names, "-" as "_"


def discover_modules(pkg_dir: Path) -> tuple[str, ...]:
    """Every ``.py`` below a package directory, as dotted module names, sorted by path."""
    out = []
    base = pkg_dir.name
    for p in sorted(pkg_dir.rglob("*.py")):
        rel = p.relative_to(pkg_dir)
        if "__pycache__" in rel.parts:
            continue
        parts = [base, *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return tuple(out)


class _Problems:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.items: list[str] = []

    def line_of(self, section: str, key: str | None) -> int | None:
        sec_re = re.compile(
            r"^\s*\[\s*" + re.escape(section).replace(r"\.", r"\s*\.\s*") + r"\s*\]"
        )
        start = None
        for i, line in enumerate(self.lines):
            if sec_re.match(line):
                start = i
                break
        if start is None:
            return None
        if key is None:
            return start + 1
        key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for j in range(start + 1, len(self.lines)):
            if self.lines[j].lstrip().startswith("["):
                break
            if key_re.match(self.lines[j]):
                return j + 1
        return start + 1

    def add(self, section: str, key: str | None, msg: str) -> None:
        line = self.line_of(section, key)
        where = f"{self.path.name}:{line}" if line else self.path.name
        dotted = f"{section}.{key}" if key else section
        self.items.append(f"{where}: {dotted}: {msg}")

    def raise_if_any(self) -> None:
        if self.items:
            msg = (
                self.items[0]
                if len(self.items) == 1
                else (f"{len(self.items)} problems: " + "; ".join(self.items))
            )
            raise ConfigError(msg, details={"problems": self.items, "file": str(self.path)})


def _valid_version(v: Any) -> bool:
    try:
        check_version("", "version", v)
    except ConfigError:
        return False
    return True


def _valid_name(v: Any) -> bool:
    try:
        check_name("", "name", v)
    except ConfigError:
        return False
    return True


def _names(pb: _Problems, rel: dict[str, Any], key: str, what: str) -> tuple[str, ...]:
    v = rel.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        pb.add("tool.relhandler.release", key, f"must be an array of {what}")
        return ()
    return tuple(v)


def read_config(project_dir: Path) -> BuildConfig:
    """Read and validate ``project_dir/pyproject.toml``; raises ``ConfigError``."""
    project_dir = project_dir.resolve()
    path = project_dir / "pyproject.toml"
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except FileNotFoundError as e:
        raise ConfigError(
            f"{path}: not found; run `relhandler build` in a project directory "
            f"or create one with `relhandler new NAME`"
        ) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e} — fix the TOML syntax") from e
    pb = _Problems(path, text)
    project = data.get("project", {})
    if not isinstance(project, dict):
        pb.add("project", None, "must be a table ([project] with name, version)")
        project = {}
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{path.name}: tool must be a table; write [tool.relhandler.release]")
    tool = tool.get("relhandler")
    if not isinstance(tool, dict):
        raise ConfigError(
            f"{path.name}: no [tool.relhandler] table; add [tool.relhandler.release] "
            f'with applications = ["your_app"]'
        )
    for k in sorted(set(tool) - {"release", "apps", "verify"}):
        pb.add("tool.relhandler", k, "unknown key; allowed: release, apps, verify")
    rel = tool.get("release", {})
    if not isinstance(rel, dict):
        pb.add("tool.relhandler", "release", "must be a table")
        rel = {}
    for k in sorted(set(rel) - RELEASE_KEYS):
        pb.add(
            "tool.relhandler.release", k, f"unknown key; allowed: {', '.join(sorted(RELEASE_KEYS))}"
        )
    name = rel.get("name", project.get("name"))
    if not _valid_name(name):
        pb.add(
            "tool.relhandler.release",
            "name",
            f"{name!r} is not a valid release name (1 to 64 letters, digits, . _ -)",
        )
    version = rel.get("version", project.get("version"))
    if not _valid_version(version):
        pb.add(
            "tool.relhandler.release",
            "version",
            f"{str(version)[:80]!r} is not a valid PEP 440 version of at most 64 characters; "
            f'use e.g. "1.0.0"',
        )
    python = rel.get("python", project.get("requires-python", ">=3.11"))
    try:
        SpecifierSet(str(python))
    except InvalidSpecifier:
        pb.add(
            "tool.relhandler.release",
            "python",
            f'{python!r} is not a version specifier; use e.g. ">=3.11"',
        )
    app_names = rel.get("applications")
    if (
        not isinstance(app_names, list)
        or not app_names
        or not all(isinstance(a, str) for a in app_names)
    ):
        pb.add(
            "tool.relhandler.release",
            "applications",
            'must be a non-empty array of application names, e.g. ["my_app"]',
        )
        app_names = []
    for an in app_names:
        if not _valid_name(an):
            pb.add(
                "tool.relhandler.release",
                "applications",
                f"{an!r} is not a valid application name (1 to 64 letters, digits, . _ -)",
            )
    app_names = [an for an in app_names if _valid_name(an)]
    # [project].dependencies are bundled unless the project opts out (include_deps = false)
    include_deps = rel.get("include_deps", True)
    if not isinstance(include_deps, bool):
        pb.add("tool.relhandler.release", "include_deps", "must be true or false")
        include_deps = True
    deps = project.get("dependencies", [])
    if not isinstance(deps, list):
        pb.add(
            "project",
            "dependencies",
            f'must be an array of requirement strings, e.g. ["requests>=2"], got {deps!r}',
        )
        deps = []
    for d in deps:
        try:
            Requirement(d)
        except (InvalidRequirement, TypeError):
            pb.add("project", "dependencies", f"{d!r} is not a valid requirement")
    optional_imports = _names(pb, rel, "optional_imports", "top-level module names")
    find_links = tuple(
        project_dir / p for p in _names(pb, rel, "find_links", "directories of wheels")
    )
    hot_deps = tuple(
        canonicalize_name(n).replace("-", "_")
        for n in _names(pb, rel, "hot_deps", "distribution names")
    )
    cfg_path = None
    if "config" in rel:
        cfg_path = project_dir / str(rel["config"])
        if not cfg_path.is_file():
            pb.add(
                "tool.relhandler.release",
                "config",
                f"{rel['config']!r} does not exist; create it or remove the key",
            )
    apps_tbl = tool.get("apps", {})
    if not isinstance(apps_tbl, dict):
        pb.add("tool.relhandler", "apps", "must be a table of [tool.relhandler.apps.NAME]")
        apps_tbl = {}
    for extra in sorted(set(apps_tbl) - set(app_names)):
        pb.add(
            f"tool.relhandler.apps.{extra}",
            None,
            f"application {extra!r} is configured but not in release.applications; "
            f"add it there or remove the table",
        )
    apps: list[AppConfig] = []
    module_owner: dict[str, str] = {}
    for an in app_names:
        sec = f"tool.relhandler.apps.{an}"
        a = apps_tbl.get(an, {})
        if not isinstance(a, dict):
            pb.add(sec, None, "must be a table")
            continue
        for k in sorted(set(a) - APP_KEYS):
            pb.add(sec, k, f"unknown key; allowed: {', '.join(sorted(APP_KEYS))}")
        pkg = project_dir / str(a.get("path", an))
        if not (pkg / "__init__.py").is_file():
            pb.add(
                sec,
                "path",
                f"{pkg} is not a package directory (no __init__.py); "
                f'set path = "src/{an}" or create it',
            )
            continue
        av = a.get("version", version)
        if not _valid_version(av):
            pb.add(sec, "version", f"{str(av)[:80]!r} is not a valid PEP 440 version")
        env = a.get("env", {})
        if not isinstance(env, dict):
            pb.add(sec, "env", "must be a table")
            env = {}
        needs = a.get("applications", [])
        if not isinstance(needs, list) or not all(isinstance(x, str) for x in needs):
            pb.add(sec, "applications", "must be an array of application names")
            needs = []
        for dep in needs:
            if dep not in app_names:
                pb.add(
                    sec,
                    "applications",
                    f"needs {dep!r}, which is not in the release; add it to release.applications",
                )
        start = a.get("start")
        if start is not None and (not isinstance(start, str) or ":" not in start):
            pb.add(sec, "start", f'{start!r} must look like "package.module:function"')
        appup = pkg / str(a.get("appup", f"{an}.appup.toml"))
        if "appup" in a and not appup.is_file():
            pb.add(sec, "appup", f"{appup} does not exist")
        mods = discover_modules(pkg)
        for m in mods:
            if m in module_owner:
                pb.add(
                    sec,
                    "path",
                    f"module {m!r} is also in application "
                    f"{module_owner[m]!r}; a module belongs to one application",
                )
            module_owner[m] = an
        apps.append(
            AppConfig(
                an, str(av), pkg, mods, start, tuple(needs), env, appup if appup.is_file() else None
            )
        )
    verify = _verify_config(pb, tool.get("verify")) if "verify" in tool else None
    pb.raise_if_any()
    return BuildConfig(
        project_dir,
        str(name),
        str(version),
        str(python),
        tuple(apps),
        include_deps,
        tuple(deps),
        cfg_path,
        verify,
        optional_imports=optional_imports,
        find_links=find_links,
        hot_deps=hot_deps,
    )


def _verify_config(pb: _Problems, tbl: Any) -> VerifyConfig | None:
    sec = "tool.relhandler.verify"
    if not isinstance(tbl, dict):
        pb.add("tool.relhandler", "verify", "must be a table")
        return None
    for k in sorted(set(tbl) - VERIFY_KEYS):
        pb.add(sec, k, f"unknown key; allowed: {', '.join(sorted(VERIFY_KEYS))}")
    calls: list[tuple[str, Any]] = []
    raw_calls = tbl.get("calls", [])
    if not isinstance(raw_calls, list):
        raw_calls = [None]
    for c in raw_calls:
        if isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) and c[0]:
            calls.append((c[0], c[1]))
        else:
            pb.add(
                sec,
                "calls",
                f'{c!r}: each call is [process_name, request], e.g. calls = [["counter", "incr"]]',
            )
            break
    load = tbl.get("load")
    if load is not None and not (isinstance(load, str) and _MFN.fullmatch(load)):
        pb.add(sec, "load", f'{load!r} must look like "package.module:function"')
        load = None
    health = tbl.get("health", [])
    if not isinstance(health, list) or not all(
        isinstance(h, str) and _MFN.fullmatch(h) for h in health
    ):
        pb.add(sec, "health", 'must be an array of "package.module:function" strings')
        health = []
    exempt = tbl.get("roundtrip_exempt", [])
    if not isinstance(exempt, list) or not all(isinstance(m, str) and m for m in exempt):
        pb.add(sec, "roundtrip_exempt", 'must be an array of module names, e.g. ["app.cache"]')
        exempt = []
    max_crashes = tbl.get("max_crashes")
    if max_crashes is not None and (
        not isinstance(max_crashes, int) or isinstance(max_crashes, bool) or max_crashes < 0
    ):
        pb.add(sec, "max_crashes", f"{max_crashes!r} must be a whole number >= 0, e.g. 3")
        max_crashes = None
    seconds: dict[str, float | None] = {}
    for k in ("crash_period", "health_interval"):
        v = tbl.get(k)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or v <= 0):
            pb.add(sec, k, f"{v!r} must be a number of seconds > 0, e.g. 10")
            v = None
        seconds[k] = float(v) if v is not None else None
    return VerifyConfig(
        tuple(calls),
        load,
        tuple(health),
        tuple(exempt),
        max_crashes,
        seconds["crash_period"],
        seconds["health_interval"],
    )


def read_verify(rel_dir: Path) -> VerifyConfig | None:
    """A built release's ``verify.toml`` (``releases/VSN/``), None if it declares none;
    raises ``ConfigError`` naming the file if it is not what ``build`` writes."""
    path = rel_dir / "verify.toml"
    if not path.is_file():
        return None
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e} — rebuild the release with `relhandler build`") from e
    pb = _Problems(path, "[tool.relhandler.verify]\n" + text)
    v = _verify_config(pb, data)
    pb.raise_if_any()
    return v
