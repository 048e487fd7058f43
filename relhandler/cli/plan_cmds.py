"""Planning commands: relup, appup generate, check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

from relhandler.cli._app import app
from relhandler.cli._node import JsonOpt
from relhandler.cli._output import command, console, emit, err_console
from relhandler.errors import ConfigError, RelhandlerError, UsageError
from relhandler.release.appup import Appup, read_appup, select
from relhandler.release.appup_gen import generate_appup, render_appup
from relhandler.release.build import release_dirs, write_release_files
from relhandler.release.builders import Changed, changed_module, stale_builders
from relhandler.release.plan import (
    DepUpgrade,
    ReleaseSource,
    cycle_warning,
    dep_mods_cycle,
    dep_upgrades,
    open_release,
    plan_relup,
)
from relhandler.release.relup import Relup, dump_relup, read_relup
from relhandler.release.restart import describe_static, restart_report, restarts, static_processes
from relhandler.release.sources import shown
from relhandler.release.state_drift import forgotten_code_change, module_source
from relhandler.release.tarball import write_tarball

__all__ = ["appup_generate", "check", "relup"]

appup_app = typer.Typer(help="Appup tools.", no_args_is_help=True)
app.add_typer(appup_app, name="appup")


def _rel_dir(rel_dir: Path | None) -> Path:
    if rel_dir is not None:
        return rel_dir.resolve()
    base = Path("_build/rel")
    roots = [p for p in base.glob("*") if p.is_dir() and (p / "releases").is_dir()]
    if len(roots) != 1:
        raise UsageError("give --rel-dir (the built release root, e.g. _build/rel/NAME)")
    return roots[0].resolve()


def _source(root: Path, vsn: str, tarballs: list[Path]) -> ReleaseSource:
    for t in tarballs:
        if t.name.endswith(f"-{vsn}.tar.gz"):
            return open_release(tarball=t.resolve())
    return open_release(root=root, version=vsn)


def _tree(r: Relup) -> Tree:
    tree = Tree(Text(f"relup {r.version}", style="bold"))
    for title, entries, key in (("up", r.up, "from"), ("down", r.down, "to")):
        for e in entries:
            br = tree.add(Text(f"{title} {key} {e.vsn}"))
            for i in e.instructions:
                br.add(escape(" ".join(map(str, i)) if isinstance(i, list) else str(i)))
    return tree


@app.command()
@command
def relup(
    to: Annotated[str, typer.Option("--to", help="The new release version.")],
    from_: Annotated[list[str], typer.Option("--from", help="An old version (repeatable).")],
    rel_dir: Annotated[
        Path | None, typer.Option(help="Built release root (default: the one in _build/rel).")
    ] = None,
    from_tarball: Annotated[
        list[Path] | None, typer.Option(help="Old release tarballs (CI artefacts).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write releases/TO/relup.toml and rewrite the TO tarball to carry it.

    Example: relhandler relup --to 2.0.0 --from 1.0.0 --from-tarball sample-1.0.0.tar.gz
    """
    root = _rel_dir(rel_dir)
    new = open_release(root=root, version=to)
    olds = [_source(root, v, from_tarball or []) for v in from_]
    plan = plan_relup(new, olds)
    path = root / "releases" / to / "relup.toml"
    path.write_text(dump_relup(plan.relup))
    write_release_files(root, new.spec)
    tarball = write_tarball(
        root, release_dirs(new.spec), root.parent / f"{new.spec.name}-{to}.tar.gz"
    )
    for w in plan.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}")
    result: dict[str, Any] = {
        "relup": str(path),
        "tarball": str(tarball),
        "warnings": list(plan.warnings),
        "up": {e.vsn: list(e.instructions) for e in plan.relup.up},
        "down": {e.vsn: list(e.instructions) for e in plan.relup.down},
    }
    emit(result, json_out=json_out, human=lambda: console.print(_tree(plan.relup)))


@appup_app.command("generate")
@command
def appup_generate(
    from_: Annotated[str, typer.Option("--from", help="Old release version.")],
    to: Annotated[str, typer.Option("--to", help="New release version.")],
    app_name: Annotated[str | None, typer.Option("--app", help="Only this application.")] = None,
    rel_dir: Annotated[Path | None, typer.Option(help="Built release root.")] = None,
    from_tarball: Annotated[Path | None, typer.Option(help="The old release's tarball.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write here (one app only).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a starting appup for each application that changed between two releases.

    Example: relhandler appup generate --from 1.0.0 --to 2.0.0 --app sample_app
    """
    root = _rel_dir(rel_dir)
    new = open_release(root=root, version=to)
    old = _source(root, from_, [from_tarball] if from_tarball else [])
    docs: dict[str, str] = {}
    for a in new.spec.apps:
        if app_name and a.name != app_name:
            continue
        oa = old.spec.app(a.name)
        if oa is None or oa.version == a.version:
            continue
        doc = generate_appup(
            old.apps[a.name], old.lib_dir(a.name), new.apps[a.name], new.lib_dir(a.name)
        )
        docs[a.name] = render_appup(doc, oa.version)
    if app_name and app_name not in docs:
        raise UsageError(f"application {app_name!r} did not change between {from_} and {to}")
    if out is not None:
        if len(docs) != 1:
            raise UsageError("--out needs exactly one changed application (use --app)")
        out.write_text(next(iter(docs.values())))

    def human() -> None:
        if out is not None:  # the file holds the appup: say where, do not print it again
            console.print(f"wrote {out}", markup=False, highlight=False)
            return
        for n, t in docs.items():
            console.print(f"# {n}\n{t}", markup=False, highlight=False)

    emit(docs, json_out=json_out, human=human)


def _releases_in(root: Path) -> set[str]:
    d = root / "releases"
    return {p.name for p in d.glob("*") if (p / "release.toml").is_file()} if d.is_dir() else set()


_MOD_INSTR = ("update", "load_module", "add_module", "delete_module")


def _appup_coverage(
    new: ReleaseSource, old: ReleaseSource, appups: dict[str, Appup], out: list[str]
) -> None:
    """A module changed between ``old`` and ``new`` that the app's appup entry for the old
    version has no instruction for (or an app with no appup entry at all)."""
    for name, spec in new.apps.items():
        oa = old.apps.get(name)
        if oa is None or oa.version == spec.version or new.spec.is_hot_dep(name):
            continue  # a hot dependency has no appup: the planner writes its script
        a = appups.get(name)
        entry = select(a.up, oa.version) if a is not None else None
        if entry is None:
            out.append(
                f"{name} {oa.version}→{spec.version}: its appup has no [[up]] entry for "
                f"{oa.version}; write one (`relhandler appup generate --from {old.version} "
                f"--to {new.version} --app {name}`)"
            )
            continue
        named = {
            str(i[1])
            for i in entry.instructions
            if isinstance(i, list) and len(i) > 1 and i[0] in _MOD_INSTR
        }
        gen = generate_appup(oa, old.lib_dir(name), spec, new.lib_dir(name))
        for instr in gen["up"][0]["instructions"]:
            if instr[0] in _MOD_INSTR and instr[1] not in named:
                out.append(
                    f"{name} {oa.version}→{spec.version}: module {instr[1]!r} changed but "
                    f"the appup's [[up]] entry for {oa.version} has no instruction for it"
                )


def _restarts(
    new: ReleaseSource, root: Path, relup_doc: Relup | None, out: list[str]
) -> list[dict[str, Any]]:
    """A restart warning for each relup entry up that restarts the node: why (the
    dependencies that changed) and what loses its state (the apps and their supervisors'
    children, as far as the sources show)."""
    if relup_doc is None:
        return []
    found = []
    procs = static_processes(new.spec, new.root / "lib", new.apps)
    for e in relup_doc.up:
        try:
            old = open_release(root=root, version=e.vsn)
        except ConfigError:
            old = None
        if old is not None:
            rep = restart_report(
                old.spec, old.root / "lib", new.spec, new.root / "lib", e.instructions
            )
            if rep is None:
                continue
            wire = rep.to_wire()
            why = ", ".join(rep.reasons())
        else:
            if not restarts(e.instructions):
                continue
            wire = {"from": e.vsn, "to": new.version, "reasons": ["the relup restarts the node"]}
            why = f"release {e.vsn} is not in {root}: what changed is not known"
        wire["processes"] = procs
        found.append(wire)
        out.append(
            f"restart: the upgrade from {e.vsn} restarts the node ({why}); the state and "
            f"connections of every process are lost: {describe_static(procs) or 'no application'}"
            f" (--strict refuses it unless --allow-restart is given)"
        )
    return found


def _stale_builders(
    new: ReleaseSource, old: ReleaseSource, loaded: set[str], out: list[str]
) -> None:
    """Warn about each module the relup does not load that builds, at its load, on a class
    (or a changed function) of a module whose source changed (release/builders.py)."""
    changed: dict[str, Changed] = {}
    sources: dict[str, Path] = {}
    for name, spec in new.apps.items():
        oa = old.apps.get(name)
        for m in spec.modules:
            b = module_source(new.lib_dir(name), m)
            if b is None:
                continue
            sources[m] = b
            a = module_source(old.lib_dir(name), m) if oa is not None else None
            if a is not None and oa is not None and oa.version != spec.version:
                ab, bb = a.read_bytes(), b.read_bytes()
                if ab != bb and (c := changed_module(ab, bb)) is not None:
                    changed[m] = c
    if not changed:
        return
    modules = frozenset(sources)
    own = {
        m for name, spec in new.apps.items() if not new.spec.is_hot_dep(name) for m in spec.modules
    }
    for m, path in sources.items():
        # a hot dependency's modules are loaded by the relup it generates: nothing to add
        if m in changed or m in loaded or m not in own:
            continue
        for f in stale_builders(
            m,
            path.read_bytes(),
            is_package=path.name == "__init__.py",
            changed=changed,
            modules=modules,
        ):
            out.append(
                f"{shown(path)}:{f.line}: {m} uses {f.source}.{f.name} when it loads ({f.how}); "
                f"{f.source} changes from {old.version} but the relup does not load {m}, so it "
                f"would keep the old {f.name}: load it too, after {f.source} "
                f'(["load_module", "{m}", {{ dep_mods = ["{f.source}"] }}] in its appup; '
                f"docs/references.md)"
            )


def _state_drift(new: ReleaseSource, old: ReleaseSource, out: list[str]) -> None:
    """Warn about each GenServer module whose state shape changed between ``old`` and
    ``new`` while its code_change did not (release/state_drift.py)."""
    for name, spec in new.apps.items():
        oa = old.apps.get(name)
        if oa is None or oa.version == spec.version:
            continue
        for m in spec.modules:
            a = module_source(old.lib_dir(name), m)
            b = module_source(new.lib_dir(name), m)
            if a is None or b is None:
                continue
            d = forgotten_code_change(m, a.read_bytes(), b.read_bytes())
            if d is None:
                continue
            where = f"{shown(b)}: {m} {oa.version}→{spec.version}"
            if d.declared:
                out.append(
                    f"{where}: its declared state type {d.what} changed but its code_change "
                    f"did not; migrate the old state to the new {d.what} in code_change (the "
                    f"install's preflight refuses a state that does not match it)"
                )
            else:
                out.append(
                    f"{where}: its init changed but its code_change did not; if the state's "
                    f"shape changed, migrate it in code_change, and declare the state's type "
                    f"(a State TypedDict or dataclass) so the preflight checks every migrated "
                    f"state"
                )


@app.command()
@command
def check(
    tarball: Annotated[
        Path | None, typer.Argument(help="A release tarball (instead of --vsn/--rel-dir).")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--vsn", help="The release version to check.")
    ] = None,
    rel_dir: Annotated[Path | None, typer.Option(help="Built release root.")] = None,
    strict: Annotated[
        bool,
        typer.Option(
            help="Uncovered changes are errors: a changed module its appup or the relup "
            "misses, an upgrade path (an appup entry, a --from) with no relup."
        ),
    ] = False,
    from_: Annotated[
        list[str] | None,
        typer.Option("--from", help="An old version the release must upgrade from (repeatable)."),
    ] = None,
    allow_restart: Annotated[
        bool,
        typer.Option(
            help="With --strict: accept an upgrade that restarts the node (a changed "
            "dependency or Python requirement), losing every process's state."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Validate a release: apps, appups, relup, coverage of changed modules; print the plan.

    An upgrade the relup turns into a restart is a warning naming what changed and what
    runs; with --strict it is a problem unless --allow-restart is given.

    Example: relhandler check --vsn 2.0.0 --strict   (or: relhandler check sample-2.0.0.tar.gz)
    """
    problems: list[str] = []
    warnings: list[str] = []
    if tarball is not None:
        # verified like unpack does; older releases are not in a tarball: coverage is checked
        # against those found in --rel-dir, if given
        new = open_release(tarball=tarball.resolve())
        root = _rel_dir(rel_dir) if rel_dir is not None else new.root
        version = new.version
    elif version is not None:
        root = _rel_dir(rel_dir)
        new = open_release(root=root, version=version)
    else:
        raise UsageError("give a TARBALL, or --vsn VSN (with --rel-dir)")
    owners: dict[str, str] = {}
    appups: dict[str, Appup] = {}
    for name, spec in new.apps.items():
        for m in spec.modules:
            if m in owners:
                problems.append(f"module {m!r} is in both {owners[m]!r} and {name!r}")
            owners[m] = name
        appup_path = new.lib_dir(name) / f"{name}.appup.toml"
        if appup_path.exists():
            try:
                a = read_appup(appup_path, shown_as=shown(appup_path))
                appups[name] = a
                for entry in (*a.up, *a.down):
                    cycle = dep_mods_cycle(entry.instructions)
                    if cycle:
                        warnings.append(cycle_warning(str(appup_path), cycle))
                if a.version != spec.version:
                    warnings.append(
                        f"{a.path}: version {a.version} ≠ app version {spec.version}; set "
                        f'version = "{spec.version}" in it'
                    )
            except RelhandlerError as err:
                problems.append(err.message)
    relup_path = new.root / "releases" / version / "relup.toml"
    relup_doc: Relup | None = None
    if relup_path.exists():
        try:
            relup_doc = read_relup(relup_path)
        except RelhandlerError as err:
            problems.append(err.message)
    uncovered = problems if strict else warnings
    relup_from = {e.vsn for e in relup_doc.up} if relup_doc is not None else set()
    for vsn in from_ or []:
        if vsn not in relup_from:
            uncovered.append(
                f"no relup from {vsn}: {relup_path} has no [[up]] entry for it; run "
                f"`relhandler relup --to {version} --from {vsn}`"
            )
    # every release in the root whose app versions the appups declare an upgrade from is a
    # declared upgrade path: it needs its relup entry
    for vsn in sorted(_releases_in(root) - {version} - relup_from - set(from_ or [])):
        try:
            other = open_release(root=root, version=vsn)
        except RelhandlerError:
            continue
        for name, a in appups.items():
            oa = other.apps.get(name)
            spec = new.apps[name]
            if oa is None or oa.version == spec.version or select(a.up, oa.version) is None:
                continue
            uncovered.append(
                f"{name}'s appup declares an upgrade from {oa.version} (release {vsn}) but "
                f"{relup_path} has no entry up from {vsn}; run "
                f"`relhandler relup --to {version} --from {vsn}`"
            )
            break
    deps_from: dict[str, list[DepUpgrade]] = {}
    for vsn in sorted(relup_from | set(from_ or [])):
        try:
            old = open_release(root=root, version=vsn)
        except ConfigError:
            (problems if vsn in (from_ or []) else warnings).append(
                f"release {vsn} is not in {root}; coverage not checked"
            )
            continue
        _appup_coverage(new, old, appups, uncovered)
        deps_from[vsn] = dep_upgrades(new, old)
        _state_drift(new, old, warnings)
    if relup_doc is not None:
        for e in relup_doc.up:
            try:
                old = open_release(root=root, version=e.vsn)
            except ConfigError:
                continue
            named = {
                str(i[1])
                for i in e.instructions
                if isinstance(i, list) and i[0] in ("load", "remove") and len(i) > 1
            }
            for name, spec in new.apps.items():
                oa = old.apps.get(name)
                if oa is None or oa.version == spec.version:
                    continue
                gen = generate_appup(oa, old.lib_dir(name), spec, new.lib_dir(name))
                for instr in gen["up"][0]["instructions"]:
                    if instr[0] in _MOD_INSTR and instr[1] not in named:
                        msg = (
                            f"{name} {oa.version}→{spec.version}: module {instr[1]!r} "
                            f"changed but no relup instruction loads or removes it"
                        )
                        uncovered.append(msg)
            _stale_builders(new, old, named, warnings)
    restart_list = _restarts(
        new, root, relup_doc, problems if strict and not allow_restart else warnings
    )
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}")
    result = {
        "version": version,
        "problems": problems,
        "warnings": warnings,
        "restarts": restart_list,
        "dependencies": {
            vsn: [
                {"name": c.name, "from": c.old, "to": c.new, "hot": c.hot, "why": c.why} for c in cs
            ]
            for vsn, cs in deps_from.items()
        },
        "relup": None
        if relup_doc is None
        else {
            "up": {e.vsn: list(e.instructions) for e in relup_doc.up},
            "down": {e.vsn: list(e.instructions) for e in relup_doc.down},
        },
    }

    def human() -> None:
        if relup_doc is not None:
            console.print(_tree(relup_doc))
        for vsn, cs in deps_from.items():
            for c in cs:
                console.print(escape(f"{vsn} → {version}: {c.line()}"))
        for p in problems:
            err_console.print(f"[red]problem:[/] {escape(p)}")
        console.print("ok" if not problems else f"{len(problems)} problem(s)")

    emit(result, json_out=json_out, human=human)
    if problems:
        raise typer.Exit(1)
