"""The build's static import scan: which imports are required, which optional."""

from __future__ import annotations

from pathlib import Path

from relhandler.release.imports import MissingImport, missing_imports, scan_imports

SRC = """\
import os, json.decoder
import needed.sub
from other import thing
from . import sibling
from .sibling import f
from __future__ import annotations
try:
    import fast_json
except (ValueError, ModuleNotFoundError):
    fast_json = None
try:
    import must_have
except ValueError:
    pass
else:
    import after_else
if TYPE_CHECKING:
    from typing_only import T
else:
    import not_type_only
if typing.TYPE_CHECKING:
    import also_typing_only


def later():
    import inside_function
"""


def test_scan_lists_required_top_level_modules_with_their_first_line(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(SRC)
    assert scan_imports(f) == [
        ("os", 1),
        ("json", 1),
        ("needed", 2),
        ("other", 3),
        ("__future__", 6),
        ("must_have", 12),
        ("after_else", 16),
        ("not_type_only", 20),
        ("inside_function", 26),
    ]


def test_missing_imports_skip_stdlib_relhandler_provided_and_allow_listed(
    tmp_path: Path,
) -> None:
    f = tmp_path / "m.py"
    f.write_text(SRC)
    (tmp_path / "n.py").write_text("import relhandler.runtime\nimport needed\n")
    got = missing_imports(
        [f, tmp_path / "n.py"], provided={"needed", "other"}, optional={"after_else"}
    )
    assert got == [
        MissingImport("must_have", f, 12),
        MissingImport("not_type_only", f, 20),
        MissingImport("inside_function", f, 26),
    ]


def test_a_file_that_does_not_parse_is_left_to_the_loader(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("import nowhere\ndef (:\n")
    assert missing_imports([tmp_path / "bad.py"], provided=()) == []
