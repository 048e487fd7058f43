"""The reference documentation covers what the code accepts, and stays inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relhandler.release import config
from relhandler.terms import LOW_LEVEL

DOCS = Path(__file__).resolve().parents[2] / "docs"
HIGH_LEVEL = (
    "update",
    "load_module",
    "add_module",
    "delete_module",
    "apply",
    "add_application",
    "remove_application",
    "restart_application",
    "restart_new_emulator",
    "restart_emulator",
)


def _rows(page: str) -> set[str]:
    """The backquoted first cell of every table row of a docs page."""
    return set(re.findall(r"^\| `([^`]+)` \|", (DOCS / page).read_text(), flags=re.M))


@pytest.mark.parametrize("key", sorted(config.RELEASE_KEYS))
def test_every_release_key_is_documented(key: str) -> None:
    text = (DOCS / "reference" / "config.md").read_text()
    section = text.split("## `[tool.relhandler.release]`")[1].split("\n## ")[0]
    assert f"| `{key}` |" in section


@pytest.mark.parametrize("key", sorted(config.APP_KEYS))
def test_every_app_key_is_documented(key: str) -> None:
    text = (DOCS / "reference" / "config.md").read_text()
    section = text.split("## `[tool.relhandler.apps.NAME]`")[1].split("\n## ")[0]
    assert f"| `{key}` |" in section


@pytest.mark.parametrize("key", sorted(config.VERIFY_KEYS))
def test_every_verify_key_is_documented(key: str) -> None:
    text = (DOCS / "reference" / "config.md").read_text()
    section = text.split("## `[tool.relhandler.verify]`")[1].split("\n## ")[0]
    assert f"| `{key}` |" in section


@pytest.mark.parametrize("name", sorted(set(LOW_LEVEL)))
def test_every_low_level_instruction_is_documented(name: str) -> None:
    assert name in _rows("reference/appup.md")


@pytest.mark.parametrize("name", HIGH_LEVEL)
def test_every_high_level_instruction_has_a_section(name: str) -> None:
    headings = re.findall(r"^### (.*)$", (DOCS / "reference" / "appup.md").read_text(), re.M)
    assert any(f"`{name}`" in h for h in headings), headings


def test_no_page_points_outside_the_repository() -> None:
    for page in [*DOCS.rglob("*.md"), DOCS.parent / "README.md"]:
        text = page.read_text()
        assert "../shared" not in text and "shared/spec" not in text, page
