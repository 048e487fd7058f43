"""Every public module declares ``__all__`` and every name in it exists (style §3)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import relhandler

PUBLIC = sorted(
    m.name
    for m in pkgutil.walk_packages(relhandler.__path__, "relhandler.")
    if not any(part.startswith("_") for part in m.name.split("."))
    and not m.name.startswith("relhandler.templates")
)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_module_declares_all(name: str) -> None:
    mod = importlib.import_module(name)
    exported = getattr(mod, "__all__", None)
    if name.count(".") == 1 and mod.__file__ and mod.__file__.endswith("__init__.py"):
        exported = exported or []  # a layer package may re-export nothing
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
