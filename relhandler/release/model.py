"""The release data model and its on-disk forms: ``app.toml``, ``release.toml``, ``sys.toml``.

These files are written by ``relhandler build`` and read by the planner, the node's boot and
the release handler. Readers reject unknown keys and report ``file: key: what — fix``.

``app.toml`` (in ``lib/<app>-<vsn>/``)::

    name = "sample_app"
    version = "2.0.0"
    description = ""
    modules = ["sample_app", "sample_app.counter"]     # discovery order (sorted by path)
    applications = []                                  # apps that must be started first
    start = "sample_app.app:start"                     # optional
    env = { port = 7070 }

``release.toml`` (in ``releases/<vsn>/``)::

    name = "sample"
    version = "2.0.0"
    python = ">=3.11"
    deps = "deps-0123abcd4567ef89"                     # optional: bundled third-party lib dir
    apps = [{ name = "sample_app", version = "2.0.0", type = "permanent" }]
    # optional: every bundled distribution; a hot one is also a library app of `apps`
    dists = [{ name = "cachetools", version = "5.5.2", hot = true, compiled = false }]

``sys.toml`` (in ``releases/<vsn>/``): one table per application of env overrides.

Names and versions become directory names in a release root, so every reader checks them
(``check_name``, ``check_version``): a release, application or deps name is 1 to 64 of
letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit; a version is a PEP
440 version of at most 64 characters of letters, digits and ``. _ + ! -``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import tomli_w
from packaging.version import InvalidVersion, Version

from relhandler.errors import ConfigError

__all__ = [
    "START_TYPES",
    "AppSpec",
    "BundledDist",
    "ReleaseApp",
    "ReleaseSpec",
    "StartType",
    "app_dir_name",
    "check_name",
    "check_version",
    "dump_app",
    "dump_release",
    "dump_sys",
    "load_toml",
    "parse_app",
    "parse_release",
    "parse_sys",
    "read_app",
    "read_release",
    "read_sys",
]

StartType = Literal["permanent", "transient", "temporary", "load", "none"]
START_TYPES: tuple[str, ...] = ("permanent", "transient", "temporary", "load", "none")


@dataclass(frozen=True, slots=True)
class AppSpec:
    """An application at one version, as recorded in its ``app.toml``."""

    name: str
    version: str
    modules: tuple[str, ...]
    applications: tuple[str, ...] = ()
    start: str | None = None
    env: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def dir_name(self) -> str:
        """The lib directory name, ``<name>-<version>``."""
        return app_dir_name(self.name, self.version)


@dataclass(frozen=True, slots=True)
class ReleaseApp:
    """An application entry of a release: name, exact version and start type."""

    name: str
    version: str
    type: StartType = "permanent"

    @property
    def dir_name(self) -> str:
        return app_dir_name(self.name, self.version)


@dataclass(frozen=True, slots=True)
class BundledDist:
    """A third-party distribution bundled into a release. A ``hot`` one lives in its own
    ``lib/<name>-<version>/`` as a library application (type ``load``) of the release and is
    upgraded through the code server; the others share the ``deps`` dir."""

    name: str
    version: str
    hot: bool = False
    compiled: bool = False  # has extension modules: never hot


@dataclass(frozen=True, slots=True)
class ReleaseSpec:
    """A release as recorded in ``releases/<vsn>/release.toml``."""

    name: str
    version: str
    python: str
    apps: tuple[ReleaseApp, ...]
    deps: str | None = None
    dists: tuple[BundledDist, ...] | None = None  # None: built before dists were recorded

    def dist(self, name: str) -> BundledDist | None:
        """The bundled distribution ``name``, or None."""
        return next((d for d in self.dists or () if d.name == name), None)

    def is_hot_dep(self, app: str) -> bool:
        """Whether application ``app`` is a hot-upgradable bundled dependency."""
        d = self.dist(app)
        return d is not None and d.hot

    def app(self, name: str) -> ReleaseApp | None:
        """The entry for application ``name``, or None."""
        for a in self.apps:
            if a.name == name:
                return a
        return None


def app_dir_name(name: str, version: str) -> str:
    return f"{name}-{version}"


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning parse and I/O errors into a ConfigError naming the file."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: file not found", details={"file": str(path)}) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e} — fix the TOML syntax", details={"file": str(path)}) from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}", details={"file": str(path)}) from e


def _check_keys(
    where: str, data: Mapping[str, Any], required: set[str], optional: set[str]
) -> None:
    unknown = sorted(set(data) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {allowed}")
    missing = sorted(required - set(data))
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")


def _str(where: str, key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{where}: key {key!r} must be a string, got {v!r}")
    return v


def _str_list(where: str, key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{where}: key {key!r} must be an array of strings, got {v!r}")
    return tuple(v)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION_CHARS = re.compile(r"[A-Za-z0-9._+!-]{1,64}")


def check_name(where: str, key: str, v: Any, what: str = "name") -> str:
    """``v`` if it is a valid release/application/deps name, else a ``ConfigError``."""
    if not isinstance(v, str) or not _NAME.fullmatch(v):
        raise ConfigError(
            f"{where}: key {key!r}: {v!r} is not a valid {what} (1 to 64 letters, digits, "
            f"'.', '_' or '-', starting with a letter or digit)"
        )
    return v


def check_version(where: str, key: str, v: Any) -> str:
    """``v`` if it is a PEP 440 version that can name a directory, else a ``ConfigError``."""
    s = _str(where, key, v)
    try:
        Version(s)
    except InvalidVersion as e:
        raise ConfigError(
            f"{where}: key {key!r}: {s!r} is not a valid PEP 440 version (e.g. '1.0.0')"
        ) from e
    if not _VERSION_CHARS.fullmatch(s):
        raise ConfigError(
            f"{where}: key {key!r}: {s[:80]!r} is not a usable version (at most 64 letters, "
            f"digits, '.', '_', '+', '!' or '-'; e.g. '1.0.0')"
        )
    return s


_version = check_version


def parse_app(data: Mapping[str, Any], where: str = "app.toml") -> AppSpec:
    """Validate the contents of an ``app.toml``."""
    _check_keys(
        where, data, {"name", "version", "modules"}, {"applications", "start", "env", "description"}
    )
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise ConfigError(f"{where}: key 'env' must be a table, got {env!r}")
    start = data.get("start")
    return AppSpec(
        name=check_name(where, "name", data["name"], "application name"),
        version=_version(where, "version", data["version"]),
        modules=_str_list(where, "modules", data["modules"]),
        applications=_str_list(where, "applications", data.get("applications", [])),
        start=None if start is None else _str(where, "start", start),
        env=env,
        description=_str(where, "description", data.get("description", "")),
    )


def dump_app(app: AppSpec) -> str:
    out: dict[str, Any] = {
        "name": app.name,
        "version": app.version,
        "description": app.description,
        "modules": list(app.modules),
        "applications": list(app.applications),
        "env": dict(app.env),
    }
    if app.start is not None:
        out["start"] = app.start
    return tomli_w.dumps(out)


def read_app(path: Path) -> AppSpec:
    return parse_app(load_toml(path), str(path))


def parse_release(data: Mapping[str, Any], where: str = "release.toml") -> ReleaseSpec:
    """Validate the contents of a ``release.toml``."""
    _check_keys(where, data, {"name", "version", "python", "apps"}, {"deps", "dists"})
    apps_raw = data["apps"]
    if not isinstance(apps_raw, list):
        raise ConfigError(f"{where}: key 'apps' must be an array of tables")
    apps: list[ReleaseApp] = []
    seen: set[str] = set()
    for i, a in enumerate(apps_raw):
        w = f"{where}: apps[{i}]"
        if not isinstance(a, dict):
            raise ConfigError(f"{w} must be a table with name, version, type")
        _check_keys(w, a, {"name", "version"}, {"type"})
        t = a.get("type", "permanent")
        if t not in START_TYPES:
            raise ConfigError(f"{w}: type {t!r} is not one of {', '.join(START_TYPES)}")
        name = check_name(w, "name", a["name"], "application name")
        if name in seen:
            raise ConfigError(f"{w}: application {name!r} is listed twice")
        seen.add(name)
        apps.append(ReleaseApp(name, _version(w, "version", a["version"]), cast(StartType, t)))
    deps = data.get("deps")
    return ReleaseSpec(
        name=check_name(where, "name", data["name"], "release name"),
        version=_version(where, "version", data["version"]),
        python=_str(where, "python", data["python"]),
        apps=tuple(apps),
        # a directory directly under lib/, never a path: remove deletes it
        deps=None if deps is None else check_name(where, "deps", deps, "deps directory name"),
        dists=_dists(where, data["dists"]) if "dists" in data else None,
    )


def _dists(where: str, raw: Any) -> tuple[BundledDist, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: key 'dists' must be an array of tables")
    out = []
    for i, d in enumerate(raw):
        w = f"{where}: dists[{i}]"
        if not isinstance(d, dict):
            raise ConfigError(f"{w} must be a table with name, version, hot, compiled")
        _check_keys(w, d, {"name", "version"}, {"hot", "compiled"})
        flags = [d.get(k, False) for k in ("hot", "compiled")]
        if not all(isinstance(f, bool) for f in flags):
            raise ConfigError(f"{w}: hot and compiled must be true or false")
        out.append(
            BundledDist(_str(w, "name", d["name"]), _str(w, "version", d["version"]), *flags)
        )
    return tuple(out)


def dump_release(rel: ReleaseSpec) -> str:
    out: dict[str, Any] = {
        "name": rel.name,
        "version": rel.version,
        "python": rel.python,
        "apps": [{"name": a.name, "version": a.version, "type": a.type} for a in rel.apps],
    }
    if rel.deps is not None:
        out["deps"] = rel.deps
    if rel.dists is not None:
        out["dists"] = [
            {"name": d.name, "version": d.version, "hot": d.hot, "compiled": d.compiled}
            for d in rel.dists
        ]
    return tomli_w.dumps(out)


def read_release(path: Path) -> ReleaseSpec:
    return parse_release(load_toml(path), str(path))


def parse_sys(data: Mapping[str, Any], where: str = "sys.toml") -> dict[str, dict[str, Any]]:
    """Validate a ``sys.toml``: every top-level key is an application's env table."""
    out: dict[str, dict[str, Any]] = {}
    for app, env in data.items():
        if not isinstance(env, dict):
            raise ConfigError(f"{where}: key {app!r} must be a table of env values for that app")
        out[app] = dict(env)
    return out


def dump_sys(cfg: Mapping[str, Mapping[str, Any]]) -> str:
    return tomli_w.dumps({k: dict(v) for k, v in cfg.items()})


def read_sys(path: Path) -> dict[str, dict[str, Any]]:
    """Read ``sys.toml``; a missing file is an empty config."""
    if not path.exists():
        return {}
    return parse_sys(load_toml(path), str(path))
