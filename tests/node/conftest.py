"""Helpers for in-process node tests: a code dir with uniquely named modules."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

_ids = itertools.count(1)


class CodeDir:
    """A code-path directory where tests write module versions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"rt{next(_ids)}_"

    def name(self, base: str) -> str:
        return self.prefix + base

    def write(self, base: str, source: str) -> Path:
        path = self.root / f"{self.name(base)}.py"
        path.write_text(textwrap.dedent(source))
        return path


@pytest.fixture
def code_dir(tmp_path: Path) -> CodeDir:
    d = tmp_path / "code"
    d.mkdir()
    return CodeDir(d)


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``pred()`` holds (a quiet point), failing after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0)
        if not pred():
            await asyncio.sleep(0.001)
