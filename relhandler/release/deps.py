"""Bundled dependencies: wheels (from the index, ``--find-links`` or the last build's cache)
installed into the release's ``lib/``.

Wheels are resolved by ``pip download`` (binary only) and kept in the project's
``_build/wheels/`` with a ``lock.json``: for each set of requirements resolved (and the
interpreter tag), the wheels and their sha256. A later build whose requirements and interpreter
match an entry installs those very wheels and asks no index: so a build is reproducible
offline, and a release built twice from the same cache is byte-identical. Installing is
``pip install --no-index --no-deps`` of the wheel files themselves.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from relhandler.errors import ConfigError

__all__ = [
    "Dist",
    "HotLib",
    "Installed",
    "install_deps",
    "move_hot",
    "resolve_wheels",
    "runtime_conflict",
    "runtime_dists",
    "top_level_names",
    "wheel_cache",
]

_LOCK = "lock.json"
# what pip prints when it cannot talk to an index at all (as opposed to "no such package")
_NETWORK = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Name or service not known|"
    r"Temporary failure in name resolution|Network is unreachable|Connection refused|"
    r"ConnectTimeout|ReadTimeout|ProxyError|SSLError|No route to host"
)


@dataclass(frozen=True, slots=True)
class Dist:
    """One installed distribution of the bundle."""

    name: str  # canonical (PEP 503), "-" as "_": also its library application's name
    version: str
    top_level: tuple[str, ...]  # importable top-level names it provides
    files: tuple[str, ...]  # paths relative to the install dir (RECORD), its dist-info too
    compiled: bool  # has extension modules (.so/.pyd): never hot-loadable


@dataclass(frozen=True, slots=True)
class Installed:
    """The dependencies installed into a directory."""

    dir: Path
    dists: tuple[Dist, ...]

    def top_level(self) -> set[str]:
        return {t for d in self.dists for t in d.top_level}


def wheel_cache(project_dir: Path) -> Path:
    """Where a project's build keeps the wheels it resolved."""
    return project_dir / "_build" / "wheels"


def _tag() -> str:
    return f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _entries(cache: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((cache / _LOCK).read_text())
        entries = data.get("entries", [])
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    except (OSError, ValueError, AttributeError):
        return []


def _cached(cache: Path, reqs: Sequence[str]) -> list[Path] | None:
    """The locked wheels of an earlier build for these requirements on this interpreter, if
    every one is still there, unchanged."""
    for e in _entries(cache):
        if e.get("requirements") != list(reqs) or e.get("tag") != _tag():
            continue
        try:
            out = []
            for w in e["wheels"]:
                p = cache / str(w["file"])
                if "/" in str(w["file"]) or not p.is_file() or _sha(p) != w["sha256"]:
                    return None
                out.append(p)
            return out
        except (OSError, KeyError, TypeError):
            return None
    return None


def _pip_failure(stderr: str, *, cache: Path, find_links: Sequence[Path]) -> ConfigError:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    last = (errors or lines or ["pip failed"])[-1].removeprefix("ERROR:").strip()
    cached = any(cache.glob("*.whl"))
    hint = (
        f"--find-links {cache} (the wheels of the last build) or --find-links DIR"
        if cached
        else "--find-links DIR"
    ) + " (a directory of wheels, e.g. from `pip download --only-binary=:all: -d DIR ...`)"
    if find_links:
        where = ", ".join(map(str, find_links))
        return ConfigError(
            f"[project].dependencies: no usable wheels in {where}: {last} — put the wheels "
            f"there (`pip download --only-binary=:all: -d DIR ...`) or set include_deps = false"
        )
    if _NETWORK.search(stderr) or "from versions: none" in stderr:
        return ConfigError(
            f"[project].dependencies: the package index cannot be reached or has no wheel: "
            f"{last} — build offline with {hint}"
        )
    return ConfigError(
        f"[project].dependencies: pip could not get wheels for them: {last} — fix the "
        f"requirement, or build from wheels with {hint}"
    )


def resolve_wheels(reqs: Sequence[str], cache: Path, find_links: Sequence[Path] = ()) -> list[Path]:
    """The wheels for ``reqs`` (and their dependencies), kept in ``cache``.

    A lock entry made for the same requirements on this interpreter is reused; else ``pip
    download`` resolves them, from ``find_links`` only (no index) when given, and the
    wheels join the cache under a new lock entry."""
    hit = _cached(cache, reqs)
    if hit is not None:
        return hit
    for d in find_links:
        if not d.is_dir():
            raise ConfigError(f"--find-links {d}: not a directory; give a directory of wheels")
    with tempfile.TemporaryDirectory(prefix="relhandler-wheels-") as tmp:
        dest = Path(tmp)
        cmd = [
            *(sys.executable, "-m", "pip", "download", "--quiet"),
            *("--disable-pip-version-check", "--only-binary=:all:", "--dest", str(dest)),
        ]
        if find_links:
            cmd.append("--no-index")
            for d in find_links:
                cmd += ["--find-links", str(d)]
        r = subprocess.run([*cmd, *reqs], capture_output=True, text=True)
        if r.returncode != 0:
            raise _pip_failure(r.stderr, cache=cache, find_links=find_links)
        wheels = sorted(dest.glob("*.whl"))
        cache.mkdir(parents=True, exist_ok=True)
        for w in wheels:  # earlier builds' wheels stay: their locks still name them
            shutil.copyfile(w, cache / w.name)
    out = [cache / w.name for w in wheels]
    entry = {
        "requirements": list(reqs),
        "tag": _tag(),
        "wheels": [{"file": p.name, "sha256": _sha(p)} for p in out],
    }
    keep = [
        e
        for e in _entries(cache)
        if (e.get("requirements"), e.get("tag")) != (entry["requirements"], entry["tag"])
    ]
    tmp_lock = cache / (_LOCK + ".tmp")
    tmp_lock.write_text(json.dumps({"entries": [*keep, entry]}, indent=1) + "\n")
    tmp_lock.replace(cache / _LOCK)
    return out


def _metadata(info: Path) -> tuple[str, str]:
    name = version = ""
    for line in (info / "METADATA").read_text(errors="replace").splitlines():
        if not line:
            break  # the headers end at the first blank line
        key, _, value = line.partition(":")
        if key == "Name":
            name = value.strip()
        elif key == "Version":
            version = value.strip()
    return canonicalize_name(name).replace("-", "_"), version


def _dists(target: Path) -> tuple[Dist, ...]:
    out = []
    for info in sorted(target.glob("*.dist-info")):
        name, version = _metadata(info)
        files: list[str] = []
        for line in (info / "RECORD").read_text().splitlines():
            path = line.rsplit(",", 2)[0] if line else ""
            if path and not path.startswith("..") and (target / path).is_file():
                files.append(path)
        extra = (f.relative_to(target).as_posix() for f in info.rglob("*") if f.is_file())
        files = sorted({*files, *extra})
        tops = {
            f.split("/")[0].split(".")[0]
            for f in files
            if not f.split("/")[0].endswith((".dist-info", ".data"))
            and f.split("/")[0] not in ("bin", "__pycache__")
            and (f.endswith((".py", ".so", ".pyd")) or "/" in f)
        }
        compiled = any(f.endswith((".so", ".pyd")) for f in files)
        out.append(Dist(name, version, tuple(sorted(tops)), tuple(files), compiled))
    return tuple(out)


def install_deps(wheels: Sequence[Path], target: Path) -> Installed:
    """Install exactly ``wheels`` (no index, no resolution) into ``target``, normalised so
    the same wheels give the same bytes: no ``__pycache__``, no ``direct_url.json``."""
    if not wheels:
        target.mkdir(parents=True, exist_ok=True)
        return Installed(target, ())
    cmd = [
        *(sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"),
        *("--disable-pip-version-check", "--no-index", "--no-deps", "--only-binary=:all:"),
        *("--target", str(target), *map(str, wheels)),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ConfigError(
            f"[project].dependencies: pip could not install the wheels: {last} — delete "
            f"{wheels[0].parent} to resolve them again, or set include_deps = false"
        )
    for junk in list(target.rglob("__pycache__")):
        shutil.rmtree(junk, ignore_errors=True)
    for p in list(target.rglob("direct_url.json")):
        p.unlink()  # holds the absolute path it was installed from
        record = p.parent / "RECORD"  # and so does its line there (its hash): drop it too
        if record.is_file():
            lines = record.read_text().splitlines(keepends=True)
            record.write_text(
                "".join(x for x in lines if not x.startswith(f"{p.parent.name}/direct_url.json,"))
            )
    return Installed(target, _dists(target))


@dataclass(frozen=True, slots=True)
class HotLib:
    """A hot dependency moved into its own lib dir: a library application of the release."""

    dist: Dist
    dir_name: str  # lib/<name>-<version>
    modules: tuple[str, ...]


def _modules(files: Sequence[str]) -> tuple[str, ...]:
    out = []
    for f in files:
        parts = f.split("/")
        if not f.endswith(".py") or parts[0].endswith((".dist-info", ".data")):
            continue
        parts[-1] = parts[-1][:-3]
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return tuple(sorted(out))


def move_hot(installed: Installed, hot: Sequence[str], lib: Path) -> list[HotLib]:
    """Move each distribution named in ``hot`` (pure Python) out of the install dir into its
    own ``lib/<name>-<version>/``; one with extension modules stays in the shared dir (an
    upgrade of it restarts the node). Raises ``ConfigError`` for a name nothing bundles, or a
    package that cannot be loaded through the code server."""
    by_name = {d.name: d for d in installed.dists}
    unknown = [n for n in hot if n not in by_name]
    if unknown:
        raise ConfigError(
            f"[tool.relhandler.release].hot_deps: {unknown[0]!r} is not a bundled "
            f"distribution (bundled: {', '.join(sorted(by_name)) or 'none'}); add it to "
            f"[project].dependencies or remove it from hot_deps"
        )
    out = []
    for name in hot:
        d = by_name[name]
        if d.compiled:
            continue
        dirs = {f.rsplit("/", 1)[0] for f in d.files if f.endswith(".py") and "/" in f}
        flat = [x for x in sorted(dirs) if not (installed.dir / x / "__init__.py").is_file()]
        if flat:
            raise ConfigError(
                f"[tool.relhandler.release].hot_deps: {name} has a namespace package "
                f"({flat[0]}/ has no __init__.py), which the code server cannot load; remove "
                f"it from hot_deps (its upgrades then restart the node)"
            )
        dir_name = f"{d.name}-{d.version}"
        dest = lib / dir_name
        if dest.exists():
            shutil.rmtree(dest)
        for f in d.files:
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(installed.dir / f, dest / f)
        out.append(HotLib(d, dir_name, _modules(d.files)))
    for p in sorted(installed.dir.rglob("*"), reverse=True):  # the dirs they left empty
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    return out


def runtime_dists(
    root: str = "relhandler", extras: Iterable[str] = ()
) -> dict[str, importlib.metadata.Distribution]:
    """The distributions ``root`` runs on: itself and its runtime requirements, transitively,
    as installed here; canonical name -> distribution. Extras count for ``root`` only, and
    only those named. A requirement that is not installed (another platform's, an optional
    one) is left out."""
    out: dict[str, importlib.metadata.Distribution] = {}
    todo = [(root, ("", *extras))]
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if key in out:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        out[key] = dist
        for r in dist.requires or ():
            try:
                req = Requirement(r)
            except InvalidRequirement:
                continue
            m = req.marker
            if m is not None and not any(m.evaluate({"extra": e}) for e in wanted):
                continue  # an extra not asked for (test, docs) or another platform's
            todo.append((req.name, ("",)))
    return out


def top_level_names(dist: importlib.metadata.Distribution) -> set[str]:
    """The top-level import names a distribution provides: its ``top_level.txt`` when it has
    one, else the first component of every module or package in its RECORD."""
    listed = dist.read_text("top_level.txt")
    if listed:
        return {t.strip().split("/")[0] for t in listed.splitlines() if t.strip()}
    out = set()
    for f in dist.files or ():
        parts = f.parts
        if not parts or parts[0] in ("..", "bin", "__pycache__"):
            continue
        if parts[0].endswith((".dist-info", ".data", ".egg-info", ".pth")):
            continue
        if len(parts) > 1 or parts[0].endswith((".py", ".so", ".pyd")):
            out.add(parts[0].split(".")[0])
    return out


def runtime_conflict(bundled: Iterable[tuple[str, str]]) -> str | None:
    """Why a release bundling these (name, version) distributions cannot run on this
    relhandler, or None. The node may import its own copy of a distribution it runs on
    before the release's code (``packaging`` it always does), so a bundled copy of another
    version would not be the one imported."""
    mine = runtime_dists()
    for name, version in bundled:
        dist = mine.get(canonicalize_name(name))
        if dist is not None and dist.version != version:
            return (
                f"the release bundles {name} {version}, but the node runs on relhandler's own "
                f"{name} {dist.version}, which it may have imported before the release (then "
                f"the release gets {dist.version}); depend on {name}=={dist.version} or drop it"
            )
    return None
