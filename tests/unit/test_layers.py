"""The package layout is the architecture: imports point downward only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "relhandler"

LEAVES = {"errors", "terms", "versions"}
# layer -> the relhandler subpackages it may import (besides leaves and itself)
ALLOWED: dict[str, set[str]] = {
    "runtime": set(),
    "release": set(),
    "handler": {"runtime", "release"},
    "control": {"handler", "runtime", "release"},
    "cli": {"control", "release", "handler", "runtime"},
    "web": {"runtime"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    pkg_parts = parts[:-1] if path.name != "__init__.py" else parts
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.append(mod)
            out.extend(f"{mod}.{a.name}" for a in node.names)
    return [m for m in out if m.startswith("relhandler.")]


def _layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_upward_imports(layer: str) -> None:
    bad: list[str] = []
    for path in sorted((PKG / layer).rglob("*.py")):
        for mod in _imports(path):
            target = _layer(mod)
            if target is None or target in LEAVES or target == layer:
                continue
            if (PKG / target).is_dir() and target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(PKG.parent)} imports {mod}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_leaves_import_no_layer() -> None:
    for leaf in LEAVES:
        path = PKG / f"{leaf}.py"
        if not path.exists():
            continue
        for mod in _imports(path):
            target = _layer(mod)
            assert target in LEAVES or target is None, f"{leaf}.py imports {mod}"
