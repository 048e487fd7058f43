"""``check``'s look for a forgotten ``code_change``, from the sources alone (nothing runs).

A GenServer module whose state changed shape needs a ``code_change`` that migrates it. The
sources cannot say what a state holds, but they can say when the shape was probably touched
while the migration was not: between two versions of a module,

* the new version's declared state type changed (the class ``State``, or the class named
  in ``init``'s return annotation: see :mod:`relhandler.runtime.statetype`), or, when the
  new version declares none, its ``init`` changed,
* and its ``code_change`` is the same (or absent in both).

Each such module is a warning. The preflight checks a declared type for real, on every
live state; without one, this warning is all the help there is.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Drift", "forgotten_code_change", "module_source"]

_CALLBACKS = {"handle_call", "handle_cast", "handle_info"}


@dataclass(frozen=True, slots=True)
class Drift:
    """A module whose state shape changed (``what``) while its code_change did not."""

    module: str
    what: str  # "State" (the declared type's name) or "init"
    declared: bool


@dataclass(frozen=True, slots=True)
class _Shape:
    functions: dict[str, str]  # name -> ast dump
    state_type: tuple[str, str] | None  # (name, ast dump of its class)


def _dump(node: ast.AST) -> str:
    return ast.dump(node, include_attributes=False)


def _shape(src: bytes) -> _Shape | None:
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return None
    funcs: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    classes: dict[str, ast.ClassDef] = {}
    aliases: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            funcs[node.name] = node
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = node
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Name)
        ):
            aliases[node.targets[0].id] = node.value.id
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(node.value, ast.Name)
        ):
            aliases[node.target.id] = node.value.id
    state: tuple[str, str] | None = None
    name = "State" if "State" in classes else aliases.get("State")
    if name is not None and name in classes:
        state = ("State", _dump(classes[name]))
    elif "init" in funcs and funcs["init"].returns is not None:
        for n in ast.walk(funcs["init"].returns):
            ref = (
                n.id
                if isinstance(n, ast.Name)
                else n.value
                if isinstance(n, ast.Constant)
                else None
            )
            if isinstance(ref, str) and ref in classes:
                state = (ref, _dump(classes[ref]))
                break
    return _Shape({k: _dump(v) for k, v in funcs.items()}, state)


def forgotten_code_change(module: str, old_src: bytes, new_src: bytes) -> Drift | None:
    """A :class:`Drift` when ``module``'s state shape changed between the two sources and
    its ``code_change`` did not; None otherwise (or when it is not a GenServer module)."""
    old, new = _shape(old_src), _shape(new_src)
    if old is None or new is None:
        return None
    if "init" not in new.functions or not _CALLBACKS & set(new.functions):
        return None
    if old.functions.get("code_change") != new.functions.get("code_change"):
        return None
    if new.state_type is not None:  # the type the preflight will check states against
        if old.state_type != new.state_type:
            return Drift(module, new.state_type[0], True)
        return None
    if old.functions.get("init") != new.functions.get("init"):
        return Drift(module, "init", False)
    return None


def module_source(lib: Path, module: str) -> Path | None:
    """The file of ``module`` under an application's lib dir."""
    rel = Path(*module.split("."))
    for p in (lib / rel / "__init__.py", lib / rel.with_suffix(".py")):
        if p.is_file():
            return p
    return None
