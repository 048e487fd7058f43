"""The import guard's decisions, asked directly (``find_spec``, never installed here: the
end-to-end proof on a real node is tests/e2e/test_import_guard.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from relhandler.handler.importguard import ImportGuard, NotShippedError, allowed_names


@pytest.fixture(scope="module")
def allowed() -> frozenset[str]:
    return allowed_names()


def test_relhandler_and_its_runtime_closure_are_allowed_and_test_tools_are_not(
    allowed: frozenset[str],
) -> None:
    assert {"relhandler", "typer", "rich", "packaging", "tomli_w", "h11", "wsproto"} <= allowed
    assert {"pygments", "markdown_it", "anyio"} <= allowed  # transitively
    assert not {"pytest", "hypothesis", "_pytest", "starlette", "websockets", "attrs"} & allowed


def test_declared_dev_dependencies_and_their_requirements_join_the_allowed(
    allowed: frozenset[str],
) -> None:
    dev = allowed_names(["pytest>=8"])
    assert {"pytest", "_pytest", "pluggy", "iniconfig"} <= dev - allowed
    assert "hypothesis" not in dev


def _guard(tmp: Path, allowed: frozenset[str]) -> tuple[ImportGuard, Path, Path]:
    lib, env = tmp / "root" / "lib" / "deps-x", tmp / "env"
    for d in (lib / "nsp", env / "nsp"):
        d.mkdir(parents=True)
    (lib / "nsp" / "a.py").write_text("")
    (env / "nsp" / "b.py").write_text("")
    (lib / "shipped.py").write_text("")
    (env / "unshipped").mkdir()
    (env / "unshipped" / "__init__.py").write_text("")
    return ImportGuard(tmp / "root" / "lib", allowed), lib, env


def test_an_environment_module_is_refused_and_a_shipped_one_found(
    tmp_path: Path, allowed: frozenset[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    guard, lib, env = _guard(tmp_path, allowed)
    monkeypatch.setattr(sys, "path", [str(lib), str(env), *sys.path])
    with pytest.raises(NotShippedError) as e:
        guard.find_spec("unshipped", None)
    assert isinstance(e.value, ModuleNotFoundError) and e.value.name == "unshipped"
    assert "[project].dependencies" in str(e.value) and "\n" not in str(e.value)
    spec = guard.find_spec("shipped", None)
    assert spec is not None and spec.origin == str(lib / "shipped.py")
    # stdlib, allowed and nowhere-installed names are left to the ordinary finders
    assert guard.find_spec("json", None) is None
    assert guard.find_spec("packaging", None) is None
    assert guard.find_spec("no_such_module_anywhere", None) is None
    # a shipped package's submodule follows its __path__
    assert guard.find_spec("nsp.a", [str(lib / "nsp")]) is None


def test_a_namespace_package_keeps_only_its_portions_inside_the_root(
    tmp_path: Path, allowed: frozenset[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    guard, lib, env = _guard(tmp_path, allowed)
    monkeypatch.setattr(sys, "path", [str(lib), str(env), *sys.path])
    spec = guard.find_spec("nsp", None)
    assert spec is not None and list(spec.submodule_search_locations or []) == [str(lib / "nsp")]
    # only an outside portion: refused
    monkeypatch.setattr(sys, "path", [str(env), *sys.path[2:]])
    with pytest.raises(NotShippedError):
        guard.find_spec("nsp", None)
