"""Shared test configuration."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_OTP = os.environ.get("RELHANDLER_REQUIRE_OTP") == "1"


@pytest.fixture(scope="session")
def erl() -> str:
    """Path of ``erl``; skips with a reason when absent, fails when RELHANDLER_REQUIRE_OTP=1."""
    path = shutil.which("erl")
    if path is None:
        if REQUIRE_OTP:
            pytest.fail(
                "RELHANDLER_REQUIRE_OTP=1 but `erl` is not installed (apt-get install erlang-nox)"
            )
        pytest.skip(
            "Erlang/OTP not installed: `apt-get install erlang-nox` to run differential tests"
        )
    return path
