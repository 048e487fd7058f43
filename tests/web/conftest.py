"""relhandler.web tests: the e2e node fixtures are shared with tests/e2e."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import nodes
from tests.web.webproj import build

__all__ = ["nodes", "webt_builds"]


@pytest.fixture(scope="session")
def webt_builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """webt 1.0.0 and 2.0.0 (Starlette bundled) and their relup, built once."""
    return build(tmp_path_factory.mktemp("webt"))
