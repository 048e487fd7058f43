"""The code server: two versions (current, old) of every managed module.

Managed modules are the Python modules found under the code path (a release's lib dirs).
Each loaded version is a fresh module object executed from compiled source, and
``sys.modules[name]`` *is* the current version's module object, swapped at each load (it is
already there while the new version executes, as with a normal import). So every library
that looks a module up (dataclasses, typing, pydantic, pickle, inspect, logging) sees an
ordinary module.

How managed code refers to other managed code (the table is in docs/references.md):

* ``import m`` then ``m.f()`` is Erlang's qualified call: a module-level name bound to a
  managed module is *relinked* to the new module object whenever that module loads a new
  version, in the current and the old version of the importer alike;
* ``from m import f`` at module level follows the current version the same way (Erlang's
  ``-import``): the name is rebound to the new version's ``f`` at each load of ``m``,
  unless the importer has rebound the name itself;
* a bare ``f()`` inside ``m`` resolves through that version's own globals and stays on it
  (a local call); classes, instances, closures and bound methods keep the version they were
  made from, like Erlang funs.

A process *runs code of version V* when a frame on its await chain has V's namespace as
globals; that is what ``check_process_code``, ``soft_purge`` and ``purge`` look at.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import time
import traceback
import types
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relhandler.errors import ModuleLoadError, NoSuchModuleError, NotPurgedError
from relhandler.runtime._kernel import Pid, coroutine_frames

if TYPE_CHECKING:
    from relhandler.runtime._kernel import Node

__all__ = [
    "CodeServer",
    "LiveModule",
    "ModuleInfo",
    "ModuleVersion",
    "Prepared",
    "RemoteFun",
    "Snapshot",
    "VersionLoader",
    "decorate",
    "parse_source",
]


@dataclass(frozen=True, slots=True)
class Prepared:
    """Module code read and compiled but not executed (OTP: object code read by
    ``load_object_code``); executing it is ``load_prepared``."""

    name: str
    file: Path
    vsn: str
    code: types.CodeType
    is_package: bool
    # module-level ``from X import a as b`` statements: (b, absolute X, a)
    from_imports: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ModuleVersion:
    """One loaded version of a module."""

    name: str
    module: types.ModuleType
    vsn: str
    file: Path
    loaded_at: float


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """``which(mod)``: where the current and old versions came from."""

    name: str
    current_vsn: str | None
    current_file: str | None
    old_vsn: str | None
    old_file: str | None
    loaded_at: float | None


@dataclass(slots=True)
class _Entry:
    current: ModuleVersion | None = None
    old: ModuleVersion | None = None
    loading: types.ModuleType | None = None


@dataclass(slots=True, eq=False)
class _Link:
    """A module-level name of ``owner`` that follows the current version of a module:
    ``attr`` None for the module itself (``import m``), else ``from m import attr``."""

    owner: ModuleVersion
    local: str
    attr: str | None
    obj: Any


_MISSING = object()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The module table at one instant, for an in-place rollback."""

    entries: dict[str, tuple[ModuleVersion | None, ModuleVersion | None]] = field(
        default_factory=dict
    )


def _module_dict(m: types.ModuleType) -> dict[str, Any]:
    return object.__getattribute__(m, "__dict__")  # type: ignore[no-any-return]


class LiveModule(types.ModuleType):
    """A handle that forwards every attribute lookup to the current version at that moment
    (``node.code.live(name)``, ``relhandler.runtime.current(name)``); not in ``sys.modules``."""

    __relhandler_server__: CodeServer

    def __getattribute__(self, attr: str) -> Any:
        # __getattribute__, not __getattr__: a module's failed lookup before the
        # __getattr__ fallback costs ~13 µs on CPython 3.11 (~15x this path)
        d = _module_dict(self)
        name = d["__name__"]
        server: CodeServer = d["__relhandler_server__"]
        entry = server._table.get(name)
        if entry is not None:
            target = entry.current.module if entry.current is not None else entry.loading
            if target is not None:
                try:
                    return target.__dict__[attr]
                except KeyError:
                    pass
        try:
            return types.ModuleType.__getattribute__(self, attr)
        except AttributeError:
            pass
        sub = sys.modules.get(f"{name}.{attr}")
        if sub is not None:
            return sub
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        if entry is None or (entry.current is None and entry.loading is None):
            raise AttributeError(f"module {name!r} has no current version (deleted or purged)")
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    def __dir__(self) -> list[str]:
        d = _module_dict(self)
        entry = d["__relhandler_server__"]._table.get(d["__name__"])
        if entry is None or entry.current is None:
            return []
        return sorted(entry.current.module.__dict__)


class RemoteFun:
    """Erlang's ``fun m:f/N``: calls ``f`` of whatever version of module ``m`` is current
    at each call. Store one in a state (instead of the function itself, which keeps its
    version, like a local fun) when the stored callback must follow upgrades."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(sys.modules[self.module], self.name)(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteFun) and (self.module, self.name) == (
            other.module,
            other.name,
        )

    def __hash__(self) -> int:
        return hash((RemoteFun, self.module, self.name))

    def __repr__(self) -> str:
        return f"RemoteFun({self.module!r}, {self.name!r})"


class VersionLoader(importlib.machinery.SourceFileLoader):
    """The loader of one loaded version (its ``__loader__`` and ``__spec__.loader``):
    a source file loader for that version's file, so ``importlib.resources``,
    ``pkgutil.get_data``, ``get_source`` and ``inspect`` read what a normal import would
    (a package's data from the directory that version came from). It never executes
    anything: versions are loaded by the code server (``importlib.reload`` is a no-op)."""

    def __init__(self, fullname: str, path: str, server: CodeServer | None) -> None:
        super().__init__(fullname, path)
        self.server = server
        self.spec: importlib.machinery.ModuleSpec | None = None

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to do: the code server executed the version."""


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Autoload: importing a managed module that is not loaded yet loads it (Erlang-style)."""

    def __init__(self, server: CodeServer) -> None:
        self.server = server

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        found = self.server._locate(fullname)
        if found is None:
            return None
        file, is_pkg = found
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=str(file), is_package=is_pkg)
        spec.has_location = True
        if is_pkg:
            spec.submodule_search_locations = [str(file.parent)]
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return self.server.load(spec.name).module

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to execute: create_module already executed the current version. The
        import system replaced its ``__spec__`` with the finder's; put its own back."""
        loader = module.__dict__.get("__loader__")
        if isinstance(loader, VersionLoader) and loader.spec is not None:
            module.__spec__ = loader.spec
            return
        # importlib.reload of a loaded version: it overwrote the version's spec, loader,
        # __file__ and __path__ with the finder's; put them back and say what to use
        name = module.__dict__.get("__name__")
        e = self.server._table.get(name) if isinstance(name, str) else None
        for v in (e.current, e.old) if e is not None else ():
            if v is not None and v.module is module:
                decorate(module, v.name, v.file, v.file.name == "__init__.py", self.server)
                warnings.warn(
                    f"importlib.reload does not load a new version of managed module "
                    f"{v.name!r}: use `relhandler reload {v.name}` (node.code.reload)",
                    stacklevel=2,
                )
                return


def decorate(
    m: types.ModuleType, name: str, file: Path, is_package: bool, server: CodeServer | None
) -> None:
    """Give the module object of a version of ``name`` loaded from ``file`` what an
    import gives a module: its own spec and loader, ``__file__``, ``__package__`` and a
    package's ``__path__``."""
    loader = VersionLoader(name, str(file), server)
    spec = importlib.machinery.ModuleSpec(name, loader, origin=str(file), is_package=is_package)
    spec.has_location = True
    loader.spec = spec
    m.__spec__ = spec
    m.__file__ = str(file)
    m.__loader__ = loader
    m.__package__ = name if is_package else name.rpartition(".")[0]
    if is_package:
        m.__path__ = [str(file.parent)]
        spec.submodule_search_locations = [str(file.parent)]


_AST_RACE = "recursion depth mismatch"
_AST_TRIES = 20


def parse_source(source: str | bytes, filename: str, mode: str = "exec") -> Any:
    """``ast.parse``, retried when CPython 3.11's AST converter trips over another thread.

    3.11 keeps the converter's recursion count per interpreter, not per thread: when one
    thread parses while another one does too (``traceback`` parses source to place its
    carets) a correct tree is refused with ``SystemError: AST constructor recursion depth
    mismatch`` (seen here on 3.11.7; python/cpython#106905). Parsing is pure, so trying
    again is safe; a genuine SystemError is raised on the last try.
    """
    for attempt in range(_AST_TRIES):
        try:
            return ast.parse(source, filename, mode)
        except SystemError as e:
            if _AST_RACE not in str(e) or attempt == _AST_TRIES - 1:
                raise
            time.sleep(0.001)  # let the other thread's parse finish
    raise AssertionError("unreachable")


def _literal_vsn(tree: ast.Module) -> str | None:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if (
                    isinstance(t, ast.Name)
                    and t.id == "__vsn__"
                    and isinstance(node.value, ast.Constant)
                ):
                    return str(node.value.value)
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "__vsn__"
            and isinstance(node.value, ast.Constant)
        ):
            return str(node.value.value)
    return None


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run when the module executes (not those inside defs or classes)."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.For | ast.While | ast.With | ast.AsyncFor):
            yield from _top_level(node.body)
            yield from _top_level(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try | ast.TryStar):
            yield from _top_level(node.body)
            for h in node.handlers:
                yield from _top_level(h.body)
            yield from _top_level(node.orelse)
            yield from _top_level(node.finalbody)


def _from_imports(
    tree: ast.Module, name: str, is_package: bool
) -> tuple[tuple[str, str, str], ...]:
    package = name if is_package else name.rpartition(".")[0]
    out: list[tuple[str, str, str]] = []
    for node in _top_level(tree.body):
        if not isinstance(node, ast.ImportFrom):
            continue
        try:
            mod = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        except ImportError:  # beyond the top-level package: the import itself fails
            continue
        for a in node.names:
            if a.name != "*":
                out.append((a.asname or a.name, mod, a.name))
    return tuple(out)


def _idle_behaviour(p: Any) -> bool:
    """A behaviour process between callbacks holds only runtime frames: no module code
    (unless a child task of it runs some)."""
    s = p.sys
    return s is not None and getattr(s, "in_callback", True) is False and not p.tasks


class CodeServer:
    """The node's module table (``node.code``)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.path: list[Path] = []
        self._table: dict[str, _Entry] = {}
        self._finder: _Finder | None = None
        self._live: dict[str, LiveModule] = {}
        # module name -> the names (in managed namespaces) that follow its current version
        self._links: dict[str, dict[int, _Link]] = {}
        # id(owner ModuleVersion) -> (source module, link id) of the links it owns
        self._owned: dict[int, list[tuple[str, int]]] = {}

    # -- path ------------------------------------------------------------------
    def set_path(self, dirs: Sequence[Path | str]) -> None:
        """Set the dirs holding managed top-level packages/modules; installs the finder."""
        self.path = [Path(d).resolve() for d in dirs]
        if self._finder is None:
            self._finder = _Finder(self)
            sys.meta_path.insert(0, self._finder)

    def owns(self, spec: importlib.machinery.ModuleSpec) -> bool:
        """Whether ``spec`` is this code server's: a managed module on its code path."""
        return self._finder is not None and spec.loader is self._finder

    def _locate(self, name: str) -> tuple[Path, bool] | None:
        rel = Path(*name.split("."))
        for d in self.path:
            # resolved: a dev root's lib dir links the project's package (relhandler dev),
            # and errors, tracebacks and `which` name the source file that was edited
            pkg = d / rel / "__init__.py"
            if pkg.is_file():
                return pkg.resolve(), True
            mod = d / rel.with_suffix(".py")
            if mod.is_file():
                return mod.resolve(), False
        return None

    def find(self, name: str) -> Path:
        """The file ``name`` would load from, on the code path."""
        found = self._locate(name)
        if found is None:
            raise NoSuchModuleError(
                f"module {name!r} is not on the code path ({', '.join(map(str, self.path))})"
            )
        return found[0]

    # -- loading ---------------------------------------------------------------
    def prepare(self, name: str, file: Path | str | None = None) -> Prepared:
        """Read and compile ``name`` (from ``file`` or the code path); executes nothing."""
        if file is None:
            found = self._locate(name)
            if found is None:
                raise NoSuchModuleError(f"module {name!r} is not on the code path")
            path, is_pkg = found
        else:
            path = Path(file).resolve()
            is_pkg = path.name == "__init__.py"
        try:
            source = path.read_bytes()
        except OSError as e:
            raise NoSuchModuleError(f"cannot read {path}: {e.strerror}") from e
        try:
            code = compile(source, str(path), "exec", dont_inherit=True)
            tree = parse_source(source, str(path))
        except SyntaxError as e:
            raise ModuleLoadError(
                f"{path}:{e.lineno}: syntax error in module {name!r}: {e.msg}",
                details={"module": name, "file": str(path), "line": e.lineno},
            ) from e
        vsn = _literal_vsn(tree) or ("sha256:" + hashlib.sha256(source).hexdigest()[:16])
        return Prepared(name, path, vsn, code, is_pkg, _from_imports(tree, name, is_pkg))

    def _decorate(self, m: types.ModuleType, p: Prepared) -> None:
        decorate(m, p.name, p.file, p.is_package, self)

    def _execute(self, p: Prepared, entry: _Entry) -> ModuleVersion:
        m = types.ModuleType(p.name)
        self._decorate(m, p)
        m.__dict__["__builtins__"] = builtins
        entry.loading = m
        # as a normal import does: the module is in sys.modules while it executes, so
        # dataclasses, typing and pydantic resolve names in the namespace being built
        sys.modules[p.name] = m
        try:
            exec(p.code, m.__dict__)
        except BaseException as e:
            tb = "".join(traceback.format_exception(e))
            line = None
            for fs in reversed(traceback.extract_tb(e.__traceback__)):
                if fs.filename == str(p.file):
                    line = fs.lineno
                    break
            where = f"{p.file}:{line}" if line else str(p.file)
            raise ModuleLoadError(
                f"{where}: module {p.name!r} raised {type(e).__name__}: {e} while loading",
                details={"module": p.name, "file": str(p.file), "line": line, "traceback": tb},
            ) from e
        finally:
            entry.loading = None
        return ModuleVersion(p.name, m, p.vsn, p.file, time.time())

    def _install(self, p: Prepared) -> ModuleVersion:
        entry = self._table.get(p.name)
        fresh = entry is None
        if entry is None:
            entry = _Entry()
            self._table[p.name] = entry
        before = sys.modules.get(p.name)
        try:
            version = self._execute(p, entry)
        except ModuleLoadError:
            if fresh:
                del self._table[p.name]
            if before is None:
                sys.modules.pop(p.name, None)
            else:
                sys.modules[p.name] = before
            raise
        entry.old = entry.current
        entry.current = version
        sys.modules[p.name] = version.module
        if p.is_package:
            self._adopt_submodules(version)
        self._record_links(version, p)
        self._relink(p.name)
        return version

    def _adopt_submodules(self, v: ModuleVersion) -> None:
        """A new version of a package gets its loaded submodules as attributes: its own
        ``from .sub import x`` finds ``pkg.sub`` in ``sys.modules`` and, as Python's import
        does for a submodule already imported, does not set it on the package (so
        ``import pkg.sub; pkg.sub.f()`` would fail after the package's upgrade)."""
        prefix = v.name + "."
        ns = v.module.__dict__
        for name, e in self._table.items():
            child = name[len(prefix) :]
            if name.startswith(prefix) and "." not in child and e.current is not None:
                ns.setdefault(child, e.current.module)

    # -- references that follow the current version --------------------------------------
    def _managed_name(self, obj: object) -> str | None:
        """The name of the managed module ``obj`` is a version of, else None."""
        if not isinstance(obj, types.ModuleType) or isinstance(obj, LiveModule):
            return None
        name = obj.__dict__.get("__name__")
        e = self._table.get(name) if isinstance(name, str) else None
        if e is None:
            return None
        if e.loading is obj or any(v is not None and v.module is obj for v in (e.current, e.old)):
            return name
        return None

    def _made_here(self, obj: object, name: str) -> bool:
        """``obj`` is a version of module ``name`` this server executed, live or not (a
        rollback drops the version it replaces, and the package's attribute must still
        be recognised as that module's, not as something the code put there)."""
        return (
            type(obj) is types.ModuleType
            and obj.__dict__.get("__name__") == name
            and isinstance(loader := obj.__dict__.get("__loader__"), VersionLoader)
            and loader.server is self
        ) or self._managed_name(obj) == name

    def _alive(self, v: ModuleVersion) -> bool:
        e = self._table.get(v.name)
        return e is not None and (e.current is v or e.old is v)

    def _add_link(self, source: str, link: _Link) -> None:
        self._links.setdefault(source, {})[id(link)] = link
        self._owned.setdefault(id(link.owner), []).append((source, id(link)))

    def _drop_links(self, v: ModuleVersion) -> None:
        for source, lid in self._owned.pop(id(v), ()):
            links = self._links.get(source)
            if links is not None:
                links.pop(lid, None)

    def _record_links(self, v: ModuleVersion, p: Prepared) -> None:
        ns = v.module.__dict__
        modules: set[str] = set()
        for local, val in list(ns.items()):
            src = self._managed_name(val)
            if src is not None:
                modules.add(local)
                self._add_link(src, _Link(v, local, None, val))
        for local, src, attr in p.from_imports:
            e = self._table.get(src)
            if local in modules or src == v.name or e is None or e.current is None:
                continue  # a module importing from itself names its own version: local
            val = ns.get(local, _MISSING)
            # only a name still bound to what the import gave (not rebound by the module)
            if val is not _MISSING and e.current.module.__dict__.get(attr, _MISSING) is val:
                self._add_link(src, _Link(v, local, attr, val))

    def _relink(self, source: str, seen: set[str] | None = None) -> None:
        """Point every name that follows ``source`` at its current version (and, through
        re-exports, every name that follows a module whose namespace changed)."""
        e = self._table.get(source)
        if e is None or e.current is None:
            return
        seen = seen if seen is not None else set()
        seen.add(source)
        new_mod = e.current.module
        new_ns = new_mod.__dict__
        changed: set[str] = set()
        for link in list(self._links.get(source, {}).values()):
            if not self._alive(link.owner):
                self._drop_links(link.owner)
                continue
            ns = link.owner.module.__dict__
            if ns.get(link.local, _MISSING) is not link.obj:
                continue  # the importer rebound the name itself: leave it
            new = new_mod if link.attr is None else new_ns.get(link.attr, _MISSING)
            if new is link.obj:
                continue
            if new is _MISSING:
                # the new version no longer defines it: unbound, as Erlang's call of an
                # -imported function that is gone is undef (not the old version forever);
                # a later version that defines it again binds it again
                ns.pop(link.local, None)
                link.obj = _MISSING
            else:
                ns[link.local] = link.obj = new
            changed.add(link.owner.name)
        parent, _, child = source.rpartition(".")
        pe = self._table.get(parent) if parent else None
        if pe is not None:
            # ``import pkg.sub; pkg.sub.f()``: the package's attribute is the submodule
            for pv in (pe.current, pe.old):
                if pv is None:
                    continue
                ns = pv.module.__dict__
                old = ns.get(child, _MISSING)
                if old is not new_mod and (
                    (old is _MISSING and pv is pe.current) or self._made_here(old, source)
                ):
                    ns[child] = new_mod
                    changed.add(parent)
        for name in changed - seen:
            self._relink(name, seen)

    def load(self, name: str, file: Path | str | None = None) -> ModuleVersion:
        """Load a new current version (``code:load_file``): refused with ``NotPurgedError``
        if an old version still exists; a module that fails changes nothing."""
        entry = self._table.get(name)
        if entry is not None and entry.old is not None:
            raise NotPurgedError(
                f"module {name!r} still has an old version; purge it first "
                f"(`relhandler purge {name}`) before loading a third version",
                details={"module": name},
            )
        return self._install(self.prepare(name, file))

    def load_prepared(self, p: Prepared) -> ModuleVersion:
        """Make prepared code current (``code:load_binary``): hard-purges old code first."""
        entry = self._table.get(p.name)
        if entry is not None and entry.old is not None:
            self.purge(p.name)
        return self._install(p)

    def reload(self, name: str, file: Path | str | None = None) -> ModuleVersion:
        """The shell's ``l/1``: soft-purge if possible, then load from disk (or ``file``)."""
        entry = self._table.get(name)
        if entry is not None and entry.old is not None and not self.soft_purge(name):
            users = ", ".join(map(str, self.old_code_users(name)))
            raise NotPurgedError(
                f"module {name!r}: processes still run its old code ({users}); "
                f"`relhandler purge {name}` kills them, or wait until they leave it",
                details={"module": name},
            )
        return self.load(name, file)

    # -- purging ---------------------------------------------------------------
    def old_code_users(self, name: str) -> list[Pid]:
        """Processes with a frame in the old version of ``name``."""
        entry = self._table.get(name)
        if entry is None or entry.old is None:
            return []
        ns = entry.old.module.__dict__
        return [
            p.pid
            for p in self.node.processes.values()
            if p.alive
            and not _idle_behaviour(p)
            and any(f.f_globals is ns for f in coroutine_frames(p))
        ]

    def check_process_code(self, pid: Pid, name: str) -> bool:
        """True iff ``pid`` runs (has a frame in) the old code of ``name``."""
        entry = self._table.get(name)
        p = self.node.processes.get(pid)
        if entry is None or entry.old is None or p is None:
            return False
        ns = entry.old.module.__dict__
        return any(f.f_globals is ns for f in coroutine_frames(p))

    def purge(self, name: str) -> bool:
        """Kill (``killed``) every process in old code of ``name``, drop the old version.
        Returns whether a process was killed."""
        users = self.old_code_users(name)
        for pid in users:
            p = self.node.processes.get(pid)
            if p is not None:
                self.node._kill(p, "killed")
        self._drop_old(name)
        return bool(users)

    def _drop_old(self, name: str) -> None:
        entry = self._table.get(name)
        if entry is not None and entry.old is not None:
            self._drop_links(entry.old)
            entry.old = None

    def soft_purge(self, name: str) -> bool:
        """Drop the old version if no process runs it; else change nothing, return False."""
        if self.old_code_users(name):
            return False
        self._drop_old(name)
        return True

    def delete(self, name: str) -> bool:
        """Current → old with no current (``code:delete``); False if old code exists."""
        entry = self._table.get(name)
        if entry is None or entry.current is None or entry.old is not None:
            return False
        entry.old = entry.current
        entry.current = None
        if sys.modules.get(name) is entry.old.module:
            del sys.modules[name]
        return True

    def unload(self, name: str) -> None:
        """Forget ``name`` entirely (hard-purging users of any version)."""
        entry = self._table.get(name)
        if entry is None:
            return
        if entry.old is not None:
            self.purge(name)
        if entry.current is not None:
            entry.old, entry.current = entry.current, None
            self.purge(name)
        if self._managed_name(sys.modules.get(name)) == name:
            del sys.modules[name]
        del self._table[name]
        self._live.pop(name, None)

    # -- queries ---------------------------------------------------------------
    def is_loaded(self, name: str) -> bool:
        e = self._table.get(name)
        return e is not None and e.current is not None

    def has_old(self, name: str) -> bool:
        e = self._table.get(name)
        return e is not None and e.old is not None

    def current(self, name: str) -> types.ModuleType:
        """The module object of the current version (the namespace callbacks run in)."""
        e = self._table.get(name)
        if e is None and self._locate(name) is not None:
            parent = name.rpartition(".")[0]
            if parent and parent not in self._table and self._locate(parent) is not None:
                # as importing ``pkg.sub`` does: the package first, so ``pkg.sub`` is set
                # on it when the submodule loads (``import pkg.sub; pkg.sub.f()`` works)
                self.current(parent)
                e = self._table.get(name)  # the package may have imported it itself
            if e is None:
                return self.load(name).module
        if e is None or e.current is None:
            raise NoSuchModuleError(f"module {name!r} is not loaded")
        return e.current.module

    def live(self, name: str) -> types.ModuleType:
        """A :class:`LiveModule` for ``name``: each attribute lookup goes to the version that
        is current at that moment (a handle for code that is not managed itself)."""
        if not self.is_loaded(name):
            self.current(name)
        proxy = self._live.get(name)
        if proxy is None:
            proxy = LiveModule(name)
            _module_dict(proxy)["__relhandler_server__"] = self
            self._live[name] = proxy
        return proxy

    def vsn(self, name: str) -> str | None:
        e = self._table.get(name)
        return None if e is None or e.current is None else e.current.vsn

    def old_vsn(self, name: str) -> str | None:
        e = self._table.get(name)
        return None if e is None or e.old is None else e.old.vsn

    def which(self, name: str) -> ModuleInfo:
        e = self._table.get(name)
        if e is None:
            raise NoSuchModuleError(f"module {name!r} is not loaded")
        c, o = e.current, e.old
        return ModuleInfo(
            name,
            c.vsn if c else None,
            str(c.file) if c else None,
            o.vsn if o else None,
            str(o.file) if o else None,
            c.loaded_at if c else None,
        )

    def all_loaded(self) -> list[str]:
        return sorted(n for n, e in self._table.items() if e.current is not None)

    # -- rollback --------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return Snapshot({n: (e.current, e.old) for n, e in self._table.items()})

    def restore(self, snap: Snapshot) -> None:
        """Put the module table back as it was at ``snap`` (no process is killed): the
        versions, ``sys.modules`` and every name that follows a module's current version."""
        before = {n: (e.current, e.old) for n, e in self._table.items()}
        kept = {id(v) for pair in snap.entries.values() for v in pair if v is not None}
        ours = {
            id(v.module)
            for pair in (*before.values(), *snap.entries.values())
            for v in pair
            if v is not None
        }
        for cur, old in before.values():
            for v in (cur, old):
                if v is not None and id(v) not in kept:
                    self._drop_links(v)
        for name in list(self._table):
            if name not in snap.entries:
                if id(sys.modules.get(name)) in ours:
                    del sys.modules[name]
                del self._table[name]
        changed = []
        for name, (cur, old) in snap.entries.items():
            e = self._table.setdefault(name, _Entry())
            if e.current is not cur:
                changed.append(name)
            e.current, e.old = cur, old
            if cur is not None:
                sys.modules[name] = cur.module
            elif id(sys.modules.get(name)) in ours:
                del sys.modules[name]
        for name in changed:
            self._relink(name)

    def close(self) -> None:
        """Remove this server's modules and finder from the interpreter."""
        for name in list(self._table):
            if self._managed_name(sys.modules.get(name)) == name:
                del sys.modules[name]
        self._table.clear()
        self._links.clear()
        self._owned.clear()
        self._live.clear()
        if self._finder is not None and self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        self._finder = None
