"""``relhandler build``: a release directory and a reproducible tarball from a project.

Output: ``<out>/<release>/`` with the release-root layout (formats.md §2) and
``<out>/<release>-<vsn>.tar.gz`` beside it. Building a new version into the same out dir
keeps the earlier versions, so ``relup --from OLD`` finds them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from relhandler.errors import ConfigError
from relhandler.release.appup import read_appup
from relhandler.release.config import BuildConfig, read_config
from relhandler.release.deps import (
    HotLib,
    install_deps,
    move_hot,
    resolve_wheels,
    runtime_conflict,
    wheel_cache,
)
from relhandler.release.imports import missing_imports
from relhandler.release.model import (
    AppSpec,
    BundledDist,
    ReleaseApp,
    ReleaseSpec,
    dump_app,
    dump_release,
    dump_sys,
    load_toml,
    parse_sys,
)
from relhandler.release.tarball import sha256sums, tree_files, write_tarball

__all__ = ["BuildResult", "build", "release_dirs", "write_release_files"]

_SKIP = {"__pycache__"}


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build produced (the ``--json`` output)."""

    name: str
    version: str
    release_root: Path
    tarball: Path
    sha256: str
    size: int
    apps: tuple[str, ...]
    deps: str | None


def _copy_package(src: Path, dst: Path) -> None:
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if any(part in _SKIP for part in rel.parts) or p.suffix == ".pyc":
            continue
        if p.is_symlink():
            raise ConfigError(f"{p}: symlinks are not allowed in an application package")
        target = dst / rel
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif p.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)


@dataclass(frozen=True, slots=True)
class _Bundle:
    deps: str | None = None  # the shared lib dir
    provided: frozenset[str] = frozenset()  # top-level modules
    hot: tuple[HotLib, ...] = ()
    dists: tuple[BundledDist, ...] | None = None


def _bundle_deps(cfg: BuildConfig, lib: Path, find_links: Sequence[Path]) -> _Bundle:
    """Install the project's dependencies from wheels: the hot ones each into its own lib dir
    (a library application), the rest into one content-addressed lib dir."""
    if not cfg.include_deps or not cfg.dependencies:
        return _Bundle()
    wheels = resolve_wheels(
        cfg.dependencies, wheel_cache(cfg.project_dir), [*find_links, *cfg.find_links]
    )
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "site"
        installed = install_deps(wheels, target)
        conflict = runtime_conflict((d.name, d.version) for d in installed.dists)
        if conflict is not None:
            raise ConfigError(f"[project].dependencies: {conflict}", code="dep_conflict")
        clash = sorted({a.name for a in cfg.apps} & set(cfg.hot_deps))
        if clash:
            raise ConfigError(
                f"[tool.relhandler.release].hot_deps: {clash[0]!r} is also an application of "
                f"the release; rename the application"
            )
        hot = move_hot(installed, cfg.hot_deps, lib)
        hot_names = {h.dist.name for h in hot}
        for h in hot:
            spec = AppSpec(
                h.dist.name, h.dist.version, h.modules, description="bundled dependency (hot)"
            )
            (lib / h.dir_name / "app.toml").write_text(dump_app(spec))
        dists = tuple(
            BundledDist(d.name, d.version, d.name in hot_names, d.compiled) for d in installed.dists
        )
        files = tree_files(target, ["."])
        name = None
        if files:
            digest = hashlib.sha256()
            for f in files:
                digest.update(
                    f.encode() + b"\0" + hashlib.sha256((target / f).read_bytes()).digest()
                )
            name = f"deps-{digest.hexdigest()[:16]}"
            dest = lib / name
            if not dest.exists():
                lib.mkdir(parents=True, exist_ok=True)
                shutil.copytree(target, dest)
        return _Bundle(name, frozenset(installed.top_level()), tuple(hot), dists)


def _check_imports(cfg: BuildConfig, bundled: frozenset[str]) -> None:
    """Fail the build on an import nothing in the release provides (file:line: module)."""
    provided = bundled | {a.package for a in cfg.apps}
    files = [
        p for a in cfg.apps for p in sorted(a.path.rglob("*.py")) if "__pycache__" not in p.parts
    ]
    missing = missing_imports(files, provided, cfg.optional_imports)
    if not cfg.include_deps:
        # opted out: the host's interpreter is to provide them, as the build's does
        missing = [m for m in missing if importlib.util.find_spec(m.module) is None]
    if not missing:
        return
    lines = [
        f"{_rel(m.file, cfg.project_dir)}:{m.line}: imports {m.module!r}, which neither the "
        f"release's bundled dependencies nor the standard library provide"
        for m in missing
    ]
    fix = (
        "add its distribution to [project].dependencies, or the module to "
        "[tool.relhandler.release].optional_imports if the code runs without it"
    )
    msg = lines[0] if len(lines) == 1 else f"{len(lines)} missing imports: " + "; ".join(lines)
    raise ConfigError(
        f"{msg} — {fix}",
        code="missing_import",
        details={
            "missing": [{"module": m.module, "file": str(m.file), "line": m.line} for m in missing]
        },
    )


def _rel(p: Path, base: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)


def _validate_appup(path: Path) -> None:
    """A broken appup fails the build, naming the project's file (as ``check`` would)."""
    try:
        shown_as = os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else None
    except ValueError:
        shown_as = None
    read_appup(path, shown_as=shown_as)


def release_dirs(rel: ReleaseSpec) -> list[str]:
    """The directories (relative to the root) a release's tarball holds."""
    dirs = [f"releases/{rel.version}", *(f"lib/{a.dir_name}" for a in rel.apps)]
    if rel.deps:
        dirs.append(f"lib/{rel.deps}")
    return dirs


def write_release_files(root: Path, rel: ReleaseSpec) -> None:
    """(Re)write ``SHA256SUMS`` for everything the release's tarball will hold."""
    sums_path = root / "releases" / rel.version / "SHA256SUMS"
    sums_path.unlink(missing_ok=True)
    files = tree_files(root, release_dirs(rel))
    sums_path.write_text(sha256sums(root, files))


def build(
    project_dir: Path, out_dir: Path | None = None, *, find_links: Sequence[Path] = ()
) -> BuildResult:
    """Build the release of ``project_dir``; returns where everything went.

    ``find_links``: directories of wheels to install the dependencies from, with no index
    (added to the config's ``find_links``)."""
    cfg = read_config(project_dir)
    out = (out_dir or cfg.project_dir / "_build" / "rel").resolve()
    root = out / cfg.name
    lib = root / "lib"
    rel_dir = root / "releases" / cfg.version
    if rel_dir.exists():
        shutil.rmtree(rel_dir)  # rebuilding the same version replaces it
    rel_dir.mkdir(parents=True)
    for app in cfg.apps:
        d = lib / f"{app.name}-{app.version}"
        if d.exists():
            shutil.rmtree(d)
        _copy_package(app.path, d / app.package)
        if app.appup is not None:
            _validate_appup(app.appup)
            shutil.copyfile(app.appup, d / f"{app.name}.appup.toml")
        spec = AppSpec(
            app.name, app.version, app.modules, app.applications, app.start, dict(app.env)
        )
        (d / "app.toml").write_text(dump_app(spec))
    bundle = _bundle_deps(cfg, lib, find_links)
    deps = bundle.deps
    _check_imports(cfg, bundle.provided)
    rel = ReleaseSpec(
        cfg.name,
        cfg.version,
        cfg.python,
        # hot dependencies first: library applications, loaded before the apps using them
        (
            *(ReleaseApp(h.dist.name, h.dist.version, "load") for h in bundle.hot),
            *(ReleaseApp(a.name, a.version, a.type) for a in cfg.apps),  # type: ignore[arg-type]
        ),
        deps,
        bundle.dists,
    )
    (rel_dir / "release.toml").write_text(dump_release(rel))
    if cfg.config is not None:
        sys_cfg = parse_sys(load_toml(cfg.config), str(cfg.config))
        (rel_dir / "sys.toml").write_text(dump_sys(sys_cfg))
    if cfg.verify is not None:
        (rel_dir / "verify.toml").write_text(tomli_w.dumps(cfg.verify.to_toml()))
    write_release_files(root, rel)
    tarball = write_tarball(root, release_dirs(rel), out / f"{cfg.name}-{cfg.version}.tar.gz")
    data = tarball.read_bytes()
    return BuildResult(
        cfg.name,
        cfg.version,
        root,
        tarball,
        hashlib.sha256(data).hexdigest(),
        len(data),
        tuple(a.name for a in cfg.apps),
        deps,
    )
