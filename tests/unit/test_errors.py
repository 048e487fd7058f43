from __future__ import annotations

import pytest

from relhandler import errors


@pytest.mark.parametrize(
    ("cls", "exit_code"),
    [
        (errors.ConfigError, 2),
        (errors.TarballError, 2),
        (errors.UsageError, 2),
        (errors.NotPurgedError, 1),
        (errors.InstallError, 1),
        (errors.UnreachableError, 3),
        (errors.AuthError, 3),
    ],
)
def test_exit_codes(cls: type[errors.RelhandlerError], exit_code: int) -> None:
    assert cls("x").exit_code == exit_code


def test_wire_round_trip_keeps_class_code_and_exit() -> None:
    e = errors.NotPurgedError("module 'm' has old code", details={"module": "m"})
    back = errors.error_from_wire(e.to_wire())
    assert type(back) is errors.NotPurgedError
    assert (back.code, back.message, back.exit_code, back.details) == (
        "not_purged",
        "module 'm' has old code",
        1,
        {"module": "m"},
    )


def test_unknown_wire_code_keeps_code_and_exit() -> None:
    back = errors.error_from_wire({"code": "weird", "message": "m", "exit_code": 2})
    assert (type(back), back.code, back.exit_code) == (errors.RelhandlerError, "weird", 2)
