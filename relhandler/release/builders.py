"""``check``'s look for modules that build on another module's classes when they load, from
the sources alone (nothing runs).

A module's top level runs once per load, so what it builds there from another module's
class keeps that class as it was then (docs/references.md, *What a module built from
another module's classes*): a subclass, a pydantic model or dataclass with a field of that
type, a ``singledispatch`` registration, a table of functions. When the relup loads the
other module and not the builder, the builder keeps the old class: its model refuses the
new instances, its dispatch falls back to the default. Each such reference is a
:class:`Builder`; ``check`` warns about each, with its line.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["Builder", "Changed", "changed_module", "stale_builders"]


@dataclass(frozen=True, slots=True)
class Changed:
    """What a changed module defines that a builder can hold: its top-level classes (any:
    each load makes new class objects) and the functions whose code changed."""

    classes: frozenset[str]
    functions: frozenset[str]


@dataclass(frozen=True, slots=True)
class Builder:
    """``module`` line ``line`` uses ``source.name`` when it loads, as ``how``."""

    module: str
    line: int
    source: str
    name: str
    how: str


def _parse(src: bytes) -> ast.Module | None:
    try:
        return ast.parse(src)
    except SyntaxError:
        return None


def _top(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.With):
            yield from _top(node.body)
            yield from _top(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try | ast.TryStar):
            for part in (node.body, *(h.body for h in node.handlers), node.orelse):
                yield from _top(part)


def changed_module(old_src: bytes, new_src: bytes) -> Changed | None:
    """What a builder can hold of a module whose source changed; None if either source
    does not parse (the build or the load reports it)."""
    old, new = _parse(old_src), _parse(new_src)
    if old is None or new is None:
        return None

    def funcs(t: ast.Module) -> dict[str, str]:
        return {
            n.name: ast.dump(n)
            for n in _top(t.body)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }

    before, after = funcs(old), funcs(new)
    classes = frozenset(n.name for n in _top(new.body) if isinstance(n, ast.ClassDef))
    return Changed(classes, frozenset(k for k, v in after.items() if before.get(k) != v))


def _load_time(tree: ast.Module) -> Iterator[tuple[ast.expr, str]]:
    """The expressions a module evaluates at its load that can hold another module's
    classes or functions, each with what it makes of them."""
    lazy = any(
        isinstance(n, ast.ImportFrom)
        and n.module == "__future__"
        and any(a.name == "annotations" for a in n.names)
        for n in tree.body
    )
    for node in _top(tree.body):
        if isinstance(node, ast.ClassDef):
            for b in node.bases:
                yield b, "a base class"
            for k in node.keywords:
                yield k.value, "a class keyword"
            for d in node.decorator_list:
                yield d, "a class decorator"
            # under future annotations a class with no base (a dataclass, an attrs class)
            # keeps its field types as strings, resolved when asked: nothing is held
            if lazy and not node.bases:
                continue
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign):
                    yield stmt.annotation, "a field type"
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.decorator_list:
            for d in node.decorator_list:
                yield d, "a decorator"
            a = node.args
            for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs):
                if arg.annotation is not None:
                    yield arg.annotation, "a registration"
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            yield node.value, "a value made at load"
        elif isinstance(node, ast.Expr):
            yield node.value, "a call at load"


def _names(e: ast.expr) -> Iterator[ast.expr]:
    """Names and attribute chains in ``e`` (in string annotations too), not in lambdas."""
    todo: list[ast.AST] = [e]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Lambda):
            continue
        if isinstance(n, ast.Name | ast.Attribute):
            yield n
            if isinstance(n, ast.Name):
                continue
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            with contextlib.suppress(SyntaxError):  # a docstring, not an annotation
                todo.append(ast.parse(n.value, mode="eval").body)
            continue
        todo.extend(ast.iter_child_nodes(n))


def _bindings(
    tree: ast.Module, package: str, modules: frozenset[str]
) -> dict[str, tuple[str, str | None]]:
    """Module-level names bound by imports: name -> (module, None) for a module, (module,
    attr) for ``from module import attr``."""
    out: dict[str, tuple[str, str | None]] = {}
    for node in _top(tree.body):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = (a.name, None)
                else:
                    top = a.name.split(".")[0]
                    out[top] = (top, None)
        elif isinstance(node, ast.ImportFrom):
            try:
                mod = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            except ImportError:  # beyond the top-level package: the import itself fails
                continue
            for a in node.names:
                if a.name == "*":
                    continue
                sub = f"{mod}.{a.name}" if mod else a.name
                out[a.asname or a.name] = (sub, None) if sub in modules else (mod, a.name)
    return out


def _resolve(
    n: ast.expr, binds: Mapping[str, tuple[str, str | None]], modules: frozenset[str]
) -> tuple[str, str] | None:
    chain: list[str] = []
    while isinstance(n, ast.Attribute):
        chain.append(n.attr)
        n = n.value
    if not isinstance(n, ast.Name) or n.id not in binds:
        return None
    mod, attr = binds[n.id]
    chain.reverse()
    if attr is not None:
        return (mod, attr)
    for part in chain:
        if f"{mod}.{part}" in modules:
            mod = f"{mod}.{part}"
        else:
            return (mod, part)
    return None


def stale_builders(
    module: str,
    src: bytes,
    *,
    is_package: bool,
    changed: Mapping[str, Changed],
    modules: frozenset[str],
) -> list[Builder]:
    """Each place where ``module`` (whose source ``src`` the relup does not load) builds
    at its load on a class, or a changed function, of a module in ``changed``.
    ``modules``: every module of the release (to tell a submodule from an attribute)."""
    tree = _parse(src)
    if tree is None:
        return []
    package = module if is_package else module.rpartition(".")[0]
    binds = {
        k: v for k, v in _bindings(tree, package, modules).items() if v[0] in changed or not v[1]
    }
    out: list[Builder] = []
    seen: set[tuple[int, str, str]] = set()
    for expr, how in _load_time(tree):
        for n in _names(expr):
            r = _resolve(n, binds, modules)
            if r is None or r[0] not in changed:
                continue
            c = changed[r[0]]
            if r[1] in c.classes or (r[1] in c.functions and how != "a base class"):
                key = (expr.lineno, r[0], r[1])
                if key not in seen:
                    seen.add(key)
                    out.append(Builder(module, expr.lineno, r[0], r[1], how))
    return out
