"""A managed module is an ordinary module to every library that looks at it (issue 14.1)."""

from __future__ import annotations

import logging
import sys

import pytest

from relhandler.runtime import Node
from tests.fixtures.modern import MODERN, import_normally, probe

from .conftest import CodeDir

V1 = MODERN.format(vsn="1", order_extra="")
V2 = MODERN.format(vsn="2", order_extra="\n    note: str = ''")


async def test_managed_module_behaves_as_imported_normally(
    code_dir: CodeDir, caplog: pytest.LogCaptureFixture
) -> None:
    plain = code_dir.name("plain")
    path = code_dir.write("plain", V1)
    try:
        import_normally(plain, str(path))
        expected = probe(plain)
    finally:
        sys.modules.pop(plain, None)
    me = code_dir.name("modern")
    code_dir.write("modern", V1)
    async with Node() as node:
        node.code.set_path([code_dir.root])
        node.code.load(me)
        assert sys.modules[me] is node.code.current(me)
        got = probe(me)
        assert got == expected
        with caplog.at_level(logging.WARNING, logger=me):
            sys.modules[me].hello()
        assert [r.name for r in caplog.records if r.getMessage() == f"hello from {me}"] == [me]
        # the next version is the ordinary module now; the old one keeps its own classes
        v1 = node.code.current(me)
        code_dir.write("modern", V2)
        node.code.load(me)
        assert sys.modules[me] is node.code.current(me) is not v1
        got2 = probe(me)
        assert got2.pop("pydantic") == {**expected["pydantic"], "note": ""}
        assert got2.pop("order_hints") == ["customer", "items", "note"]
        assert got2 == {k: v for k, v in expected.items() if k not in ("pydantic", "order_hints")}
        assert v1.Order.model_validate({"items": []}).model_dump() == {
            "items": [],
            "customer": None,
        }


async def test_dataclass_classvar_under_future_annotations_loads(code_dir: CodeDir) -> None:
    # the failure the issue reported: "mutable default ... for field" at load
    me = code_dir.name("dc")
    code_dir.write(
        "dc",
        """
        from __future__ import annotations
        import typing
        from dataclasses import dataclass, field
        from typing import ClassVar

        @dataclass
        class Registry:
            ALL: ClassVar[list[str]] = []
            names: list[str] = field(default_factory=list)

        def hints():
            return typing.get_type_hints(Registry)
        """,
    )
    async with Node() as node:
        node.code.set_path([code_dir.root])
        m = node.code.current(me)
        assert [f for f in m.Registry.__dataclass_fields__ if f != "ALL"] == ["names"]
        assert m.Registry.__dataclass_fields__["ALL"]._field_type.name == "_FIELD_CLASSVAR"
        assert set(m.hints()) == {"ALL", "names"}


async def test_autoloaded_package_has_an_ordinary_spec(code_dir: CodeDir) -> None:
    import importlib.util
    import inspect

    pkg = code_dir.name("pkgspec")
    d = code_dir.root / pkg
    d.mkdir()
    (d / "__init__.py").write_text("from . import sub\n")
    (d / "sub.py").write_text("class K:\n    pass\n")
    async with Node() as node:
        node.code.set_path([code_dir.root])
        mod = __import__(pkg)
        assert mod is sys.modules[pkg] is node.code.current(pkg)
        assert mod.__spec__.submodule_search_locations == [str(d)]
        assert mod.__path__ == [str(d)]
        assert importlib.util.find_spec(f"{pkg}.sub") is sys.modules[f"{pkg}.sub"].__spec__
        assert inspect.getsource(mod.sub.K) == "class K:\n    pass\n"
        assert mod.sub is node.code.current(f"{pkg}.sub")
