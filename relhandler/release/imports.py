"""The build's static import check: every top-level module the applications import must come
from the release (its applications, its bundled dependencies), the standard library or
relhandler itself.

An import is *optional*, and not checked, when it sits in a ``try`` whose handlers catch
``ImportError`` or ``ModuleNotFoundError`` (or everything), under ``if TYPE_CHECKING:``, or
names a module of the ``optional_imports`` allow-list. Relative imports are the app's own.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MissingImport", "missing_imports", "scan_imports"]

_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
# the node runs relhandler's own interpreter: the runtime is always there
ALWAYS = frozenset({"relhandler", *sys.stdlib_module_names})


@dataclass(frozen=True, slots=True)
class MissingImport:
    """An import of a top-level module nothing in the release provides."""

    module: str  # the top-level name
    file: Path
    line: int


def _name(e: ast.expr) -> str | None:
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Attribute):
        return e.attr
    return None


def _catches_import_error(t: ast.Try | ast.TryStar) -> bool:
    for h in t.handlers:
        if h.type is None:
            return True
        types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
        if any(_name(x) in _IMPORT_ERRORS for x in types):
            return True
    return False


def _type_checking(test: ast.expr) -> bool:
    return _name(test) == "TYPE_CHECKING"


def _walk(node: ast.AST, optional: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, optional
        return
    if isinstance(node, ast.Try | ast.TryStar):
        body_optional = optional or _catches_import_error(node)
        for n in node.body:
            yield from _walk(n, body_optional)
        for h in node.handlers:
            yield from _walk(h, optional)
        for n in [*node.orelse, *node.finalbody]:
            yield from _walk(n, optional)
        return
    if isinstance(node, ast.If) and _type_checking(node.test):
        for n in node.body:
            yield from _walk(n, True)
        for n in node.orelse:
            yield from _walk(n, optional)
        return
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, optional)


def scan_imports(file: Path) -> list[tuple[str, int]]:
    """The required top-level modules a source file imports, each with its first line."""
    tree = ast.parse(file.read_bytes(), str(file))
    found: dict[str, int] = {}
    for node, optional in _walk(tree, False):
        if optional:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif node.level == 0 and node.module:
            names = [node.module]
        else:
            continue  # relative: the app's own package
        for n in names:
            found.setdefault(n.split(".")[0], node.lineno)
    return sorted(found.items(), key=lambda kv: kv[1])


def missing_imports(
    files: Collection[Path], provided: Collection[str], optional: Collection[str] = ()
) -> list[MissingImport]:
    """Imports in ``files`` of top-level modules that neither ``provided``, the standard
    library, relhandler nor the ``optional`` allow-list account for."""
    ok = ALWAYS | set(provided) | set(optional)
    out = []
    for f in sorted(files):
        try:
            found = scan_imports(f)
        except (SyntaxError, ValueError):
            continue  # not this check's to report: loading the module says where it breaks
        for mod, line in found:
            if mod not in ok:
                out.append(MissingImport(mod, f, line))
    return out
