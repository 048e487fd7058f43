"""``relhandler appup generate``: a starting appup from two versions of an application.

Rules (releases.md): a changed module becomes ``update`` with an advanced change when it is a
behaviour callback module with ``code_change``, else ``load_module``; a supervisor callback
module — recognised by its structure: the app starts it with ``supervisor.start_link`` or
``supervisor.start``, or its ``init`` returns supervisor flags and specs — becomes ``update M
supervisor`` with the cookbook's ``apply supervisor:...`` for children added or removed; an
added module ``add_module``; a removed one ``delete_module``. ``dep_mods`` come from each
module's imports of other modules of the same app that also have an instruction. The down
section mirrors the up section. A human should still review ``extra`` and protocol changes.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any

import tomli_w

from relhandler.errors import AppupError
from relhandler.release.model import AppSpec

__all__ = ["generate_appup", "library_appup", "render_appup", "supervision"]


def _source(lib: Path, mod: str) -> bytes | None:
    rel = Path(*mod.split("."))
    for p in (lib / rel / "__init__.py", lib / rel.with_suffix(".py")):
        if p.is_file():
            data = p.read_bytes()
            try:
                compile(data, str(p), "exec", flags=ast.PyCF_ONLY_AST)
            except SyntaxError as e:
                e.filename = str(p)
                raise
            return data
    return None


_FLAG_KEYS = {"strategy", "intensity", "period"}


def _is_flags(node: ast.expr | None, dicts: dict[str, ast.Dict]) -> bool:
    if isinstance(node, ast.Name):
        node = dicts.get(node.id)
    return isinstance(node, ast.Dict) and any(
        isinstance(k, ast.Constant) and k.value in _FLAG_KEYS for k in node.keys
    )


def _init_returns_sup_flags(tree: ast.Module) -> bool:
    """``init`` returns ``("ok", (flags, specs))`` with flags a dict of supervisor flags."""
    for fn in tree.body:
        if not (isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name == "init"):
            continue
        dicts = {
            t.id: n.value
            for n in ast.walk(fn)
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Dict)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for r in ast.walk(fn):
            if not (isinstance(r, ast.Return) and isinstance(r.value, ast.Tuple)):
                continue
            elts = r.value.elts
            if (
                len(elts) == 2
                and isinstance(elts[0], ast.Constant)
                and elts[0].value == "ok"
                and isinstance(elts[1], ast.Tuple)
                and len(elts[1].elts) == 2
                and _is_flags(elts[1].elts[0], dicts)
            ):
                return True
    return False


def _supervisor_starts(src: bytes, mod: str) -> dict[str, str | None]:
    """Modules this source starts as supervisor callbacks (``supervisor.start_link(M, ...)``
    or ``supervisor.start``), each with the ``name=`` it registers, if a constant."""
    out: dict[str, str | None] = {}
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return out
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Call) and n.args):
            continue
        f = n.func
        if not (
            isinstance(f, ast.Attribute)
            and f.attr in ("start_link", "start")
            and isinstance(f.value, ast.Name)
            and f.value.id == "supervisor"
        ):
            continue
        first = n.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            target = first.value
        elif isinstance(first, ast.Name) and first.id == "__name__":
            target = mod
        else:
            continue
        name = next(
            (
                k.value.value
                for k in n.keywords
                if k.arg == "name"
                and isinstance(k.value, ast.Constant)
                and isinstance(k.value.value, str)
            ),
            None,
        )
        if name is not None or target not in out:
            out[target] = name
    return out


def _child_ids(src: bytes) -> list[Any]:
    """The constant ids of the child specs (dicts with "id" and "start") in ``init``, in
    order; a simple_one_for_one supervisor's one spec is not a child to start."""
    tree = ast.parse(src)
    ids: list[Any] = []
    for fn in tree.body:
        if not (isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name == "init"):
            continue
        for n in ast.walk(fn):
            if isinstance(n, ast.Constant) and n.value == "simple_one_for_one":
                return []
        for n in ast.walk(fn):
            if not isinstance(n, ast.Dict):
                continue
            keys = {
                k.value: v
                for k, v in zip(n.keys, n.values, strict=True)
                if isinstance(k, ast.Constant)
            }
            idv = keys.get("id")
            if "start" in keys and isinstance(idv, ast.Constant) and idv.value not in ids:
                ids.append(idv.value)
    return ids


def _kind(src: bytes, *, run_as_supervisor: bool = False) -> str:
    tree = ast.parse(src)
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
    # structural: the release runs it as a supervisor callback, or its init returns
    # supervisor flags and specs (a module that is both, like a connection supervisor
    # whose workers share its module, is a supervisor too: `update M supervisor` runs the
    # supervisor's own code_change for it and the module's code_change for the workers)
    if run_as_supervisor or _init_returns_sup_flags(tree):
        return "supervisor"
    if "code_change" in names:
        return "advanced"
    return "load"


def _imports(src: bytes, mod: str, is_pkg: bool, universe: set[str]) -> list[str]:
    tree = ast.parse(src)
    pkg = mod if is_pkg else mod.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(target)
            found.extend(f"{target}.{a.name}" for a in node.names)
    return [m for m in dict.fromkeys(found) if m in universe and m != mod]


def _sup_starts(spec: AppSpec, lib: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for m in spec.modules:
        src = _source(lib, m)
        if src is not None:
            for target, name in _supervisor_starts(src, m).items():
                if name is not None or target not in out:
                    out[target] = name
    return out


def supervision(spec: AppSpec, lib: Path) -> list[tuple[str, str | None, list[Any]]]:
    """The supervisors the app's code starts, as far as its sources show: (module,
    registered name if a constant, the constant ids of its children)."""
    out = []
    for mod, name in _sup_starts(spec, lib).items():
        try:
            src = _source(lib, mod)
        except SyntaxError:
            src = None
        out.append((mod, name, _child_ids(src) if src is not None else []))
    return out


def generate_appup(old: AppSpec, old_lib: Path, new: AppSpec, new_lib: Path) -> dict[str, Any]:
    """The appup document (a dict ready for TOML) leading ``old`` to ``new`` and back.

    A changed supervisor module gets ``update M supervisor`` and, as the OTP appup cookbook
    does, ``apply supervisor:restart_child`` for each child new in its specs (after the
    update: the supervisor's code_change adds the spec but does not start it), and
    ``apply supervisor:terminate_child`` + ``delete_child`` for each child gone (before
    it); the down section mirrors this. The supervisor is named by its registered name
    when the app registers one, else by its module (the installer finds the supervisor
    running it).
    """
    try:
        return _generate(old, old_lib, new, new_lib)
    except SyntaxError as e:
        raise AppupError(
            f"{e.filename}: line {e.lineno}: {e.msg}; appup generate reads the sources of both "
            f"versions: fix this one and build again"
        ) from None


def _generate(old: AppSpec, old_lib: Path, new: AppSpec, new_lib: Path) -> dict[str, Any]:
    old_mods, new_mods = set(old.modules), set(new.modules)
    new_sups, old_sups = _sup_starts(new, new_lib), _sup_starts(old, old_lib)
    changed, kinds = [], {}
    for m in new.modules:
        if m in old_mods:
            a, b = _source(old_lib, m), _source(new_lib, m)
            if a is None or b is None or hashlib.sha256(a).digest() != hashlib.sha256(b).digest():
                changed.append(m)
                kinds[m] = _kind(b or b"", run_as_supervisor=m in new_sups)
    added = [m for m in new.modules if m not in old_mods]
    removed = [m for m in old.modules if m not in new_mods]
    with_instr = set(changed) | set(added) | set(removed)

    def deps(m: str, lib: Path) -> list[str]:
        src = _source(lib, m)
        if src is None:
            return []
        is_pkg = (lib / Path(*m.split(".")) / "__init__.py").is_file()
        return _imports(src, m, is_pkg, with_instr)

    def sup_instrs(m: str, *, up: bool) -> list[list[Any]]:
        from_lib, to_lib = (old_lib, new_lib) if up else (new_lib, old_lib)
        sups = new_sups if up else old_sups
        ref = sups.get(m) or (old_sups if up else new_sups).get(m) or m
        before = _child_ids(_source(from_lib, m) or b"")
        after = _child_ids(_source(to_lib, m) or b"")
        gone = [c for c in before if c not in after]
        new_ids = [c for c in after if c not in before]
        return (
            [
                ["apply", "supervisor", f, [ref, c]]
                for c in gone
                for f in ("terminate_child", "delete_child")
            ]
            + [["update", m, "supervisor"]]
            + [["apply", "supervisor", "restart_child", [ref, c]] for c in new_ids]
        )

    def up_instr(m: str) -> list[Any]:
        d = deps(m, new_lib)
        if kinds[m] == "advanced":
            opts: dict[str, Any] = {"change": "advanced", "extra": []}
            if d:
                opts["dep_mods"] = d
            return ["update", m, opts]
        return ["load_module", m, {"dep_mods": d}] if d else ["load_module", m]

    def changed_instrs(m: str, *, up: bool) -> list[list[Any]]:
        if kinds[m] == "supervisor":
            return sup_instrs(m, up=up)
        return [up_instr(m)]

    def mod_instr(kind: str, m: str, lib: Path) -> list[Any]:
        d = deps(m, lib)
        return [kind, m, {"dep_mods": d}] if d else [kind, m]

    up = (
        [mod_instr("add_module", m, new_lib) for m in added]
        + [i for m in changed for i in changed_instrs(m, up=True)]
        + [mod_instr("delete_module", m, old_lib) for m in removed]
    )
    down = (
        [mod_instr("add_module", m, old_lib) for m in removed]
        + [i for m in changed for i in changed_instrs(m, up=False)]
        + [mod_instr("delete_module", m, new_lib) for m in added]
    )
    return {
        "version": new.version,
        "up": [{"from": old.version, "instructions": up}],
        "down": [{"to": old.version, "instructions": down}],
    }


def library_appup(old: AppSpec, old_lib: Path, new: AppSpec, new_lib: Path) -> dict[str, Any]:
    """The appup OTP's systools writes for a library application (no processes): a
    ``load_module`` for each changed module, ``add_module``/``delete_module`` for added and
    removed ones, with ``dep_mods`` from each module's imports (the load order). Used for a
    hot bundled dependency, whose code has no ``code_change`` of ours to call."""
    try:
        return _library(old, old_lib, new, new_lib)
    except SyntaxError as e:
        raise AppupError(
            f"{e.filename}: line {e.lineno}: {e.msg}; dependency {new.name} {new.version} "
            f"cannot be hot-loaded: remove it from hot_deps"
        ) from None


def _library(old: AppSpec, old_lib: Path, new: AppSpec, new_lib: Path) -> dict[str, Any]:
    old_mods, new_mods = set(old.modules), set(new.modules)
    changed = []
    for m in new.modules:
        if m in old_mods:
            a, b = _source(old_lib, m), _source(new_lib, m)
            if a != b or a is None:
                changed.append(m)
    added = [m for m in new.modules if m not in old_mods]
    removed = [m for m in old.modules if m not in new_mods]
    with_instr = set(changed) | set(added) | set(removed)

    def imports(lib: Path, mods: list[str]) -> dict[str, list[str]]:
        out = {}
        for m in mods:
            src = _source(lib, m)
            is_pkg = (lib / Path(*m.split(".")) / "__init__.py").is_file()
            out[m] = _imports(src, m, is_pkg, with_instr) if src is not None else []
        return out

    def instr(kind: str, m: str, d: list[str]) -> list[Any]:
        return [kind, m, {"dep_mods": d}] if d else [kind, m]

    new_deps = imports(new_lib, added + changed)
    old_deps = imports(old_lib, removed + changed)
    # A Python module runs its imports when it loads, so the modules it imports must be
    # loaded first in both directions. The translator loads a module *before* its dep_mods
    # on a downgrade (OTP's order, right for Erlang, whose loading runs no code), so the
    # down section names the reverse edges: the modules that import it.
    old_users = {m: [u for u, ds in old_deps.items() if m in ds] for m in with_instr}
    up = (
        [instr("add_module", m, new_deps[m]) for m in added]
        + [instr("load_module", m, new_deps[m]) for m in changed]
        + [instr("delete_module", m, []) for m in removed]
    )
    down = (
        [instr("add_module", m, old_users[m]) for m in removed]
        + [instr("load_module", m, old_users[m]) for m in changed]
        + [instr("delete_module", m, []) for m in added]
    )
    return {
        "version": new.version,
        "up": [{"from": old.version, "instructions": up}],
        "down": [{"to": old.version, "instructions": down}],
    }


HEADER = """\
# Generated by `relhandler appup generate` ({old} -> {new}). Review before shipping:
# - `extra` of advanced updates is passed to code_change; set what the migration needs.
# - a changed message protocol between modules needs dep_mods or a suspend of both sides.
# - the down section mirrors up: check that code_change handles ("down", vsn).
"""


def render_appup(doc: dict[str, Any], old_vsn: str) -> str:
    return HEADER.format(old=old_vsn, new=doc["version"]) + tomli_w.dumps(doc)
