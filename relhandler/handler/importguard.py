"""What a node can import: a release runs on what it ships.

On a node, ``import X`` finds X in exactly these places:

* the standard library;
* the release root's lib dirs: the applications (through the code server), their hot
  dependencies (library applications) and the bundled dependencies' shared dir;
* relhandler itself and the closure of its *runtime* requirements (``Requires-Dist``
  without extras, transitively, as installed beside it).

Anything else installed in relhandler's environment (a test tool, a package the developer
happened to ``pip install``) raises :class:`NotShippedError`, a ``ModuleNotFoundError``,
naming the module and the fix. The guard is a ``sys.meta_path`` finder, so it sees every
import in the node process alike: managed modules, bundled libraries' lazy imports, code run
by ``rpc``, ``console`` and health checks. A submodule follows its top-level package: a
package the guard let through imports its submodules from its own ``__path__``, and a
namespace package keeps only the portions inside the root's lib dirs.

``relhandler dev`` has no bundle: its root names the project's declared dependencies, and
the guard lets those (and their requirements) through from the environment too.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from relhandler.release.deps import runtime_dists, top_level_names

__all__ = ["ImportGuard", "NotShippedError", "allowed_names", "install"]


class NotShippedError(ModuleNotFoundError):
    """An import of a module that is installed beside relhandler but not shipped with the
    release."""


def allowed_names(extra_requirements: Sequence[str] = ()) -> frozenset[str]:
    """Top-level names importable from relhandler's environment: relhandler and its runtime
    closure, plus (``relhandler dev``) ``extra_requirements`` with their own closures and
    the extras they name."""
    dists = runtime_dists()
    for r in extra_requirements:
        try:
            req = Requirement(r)
        except InvalidRequirement:
            continue
        dists.update(runtime_dists(req.name, req.extras))
    names = {"relhandler"}
    for d in dists.values():
        names |= top_level_names(d)
    return frozenset(names)


class ImportGuard(importlib.abc.MetaPathFinder):
    """Refuses, by raising :class:`NotShippedError`, a top-level import that only
    relhandler's environment provides."""

    def __init__(
        self,
        lib: Path,
        allowed: frozenset[str],
        managed: Callable[[importlib.machinery.ModuleSpec], bool] = lambda _s: False,
    ) -> None:
        self.lib = lib.resolve()
        self.allowed = allowed
        self.managed = managed

    def _inside(self, where: str | None) -> bool:
        if not where:
            return False
        try:
            return Path(where).resolve().is_relative_to(self.lib)
        except (OSError, ValueError):
            return False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top in self.allowed or top in sys.stdlib_module_names or top in sys.builtin_module_names:
            return None
        if "." in fullname and path is not None and all(self._inside(p) for p in path):
            return None  # a shipped package's submodule: its __path__ is inside the root
        spec = self._find_elsewhere(fullname, path, target)
        if spec is None:
            return None  # not installed anywhere: the ordinary ModuleNotFoundError
        if self.managed(spec):
            return spec  # the code server's: a module on the release's code path
        locations = list(spec.submodule_search_locations or ())
        if spec.origin and spec.has_location:
            if self._inside(spec.origin):
                return spec
        elif locations:  # a namespace package: only its portions inside the root
            mine = [p for p in locations if self._inside(p)]
            if mine:
                spec.submodule_search_locations = mine
                return spec
        raise NotShippedError(
            f"module {fullname!r} is not shipped with the release: it is "
            f"installed beside relhandler, but a node imports only the standard library, "
            f"relhandler's runtime and the release's lib dirs; add its distribution to the "
            f"application's [project].dependencies so `relhandler build` bundles it",
            name=fullname,
        )

    def _find_elsewhere(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                return spec  # type: ignore[no-any-return]
        return None


def install(guard: ImportGuard) -> ImportGuard:
    """Put ``guard`` first on ``sys.meta_path`` (replacing an earlier one)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, ImportGuard)]
    sys.meta_path.insert(0, guard)
    return guard
