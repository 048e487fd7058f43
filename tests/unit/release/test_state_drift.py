"""check's forgotten-code_change warning, from two sources of a module."""

from __future__ import annotations

import pytest

from relhandler.release.state_drift import Drift, forgotten_code_change

HEAD = "def handle_call(r, f, s):\n    return ('reply', s, s)\n"
CC = "def code_change(v, s, e):\n    return ('ok', s)\n"
CC2 = "def code_change(v, s, e):\n    return ('ok', {**s, 'names': []})\n"
INIT1 = "def init(a):\n    return ('ok', {'count': 0})\n"
INIT2 = "def init(a):\n    return ('ok', {'count': 0, 'names': []})\n"
ST1 = "class State(TypedDict):\n    count: int\n"
ST2 = "class State(TypedDict):\n    count: int\n    names: list[str]\n"
TINIT = "def init(a) -> tuple[str, Shape]:\n    return ('ok', {'count': 0})\n"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (ST1 + INIT1 + HEAD + CC, ST2 + INIT2 + HEAD + CC, Drift("m", "State", True)),
        (ST1 + INIT1 + HEAD + CC, ST2 + INIT2 + HEAD + CC2, None),  # migrated
        (ST1 + INIT1 + HEAD + CC, ST1 + INIT2 + HEAD + CC, None),  # same State: init only
        (INIT1 + HEAD + CC, INIT2 + HEAD + CC, Drift("m", "init", False)),
        (INIT1 + HEAD, INIT2 + HEAD, Drift("m", "init", False)),  # no code_change at all
        (INIT1 + HEAD + CC, INIT2 + HEAD + CC2, None),
        (INIT1 + HEAD + CC, INIT1 + HEAD + CC + "\nX = 1\n", None),  # init unchanged
        (
            ST1.replace("State", "Shape") + TINIT + HEAD + CC,
            ST2.replace("State", "Shape") + TINIT + HEAD + CC,
            Drift("m", "Shape", True),
        ),
        (INIT1 + CC, INIT2 + CC, None),  # not a GenServer module
        (b"def (".decode(), INIT2 + HEAD, None),  # a syntax error: build/load reports it
    ],
    ids=[
        "state-changed",
        "state-migrated",
        "state-same",
        "init-changed",
        "init-no-cc",
        "init-migrated",
        "init-same",
        "init-annotation",
        "not-genserver",
        "syntax-error",
    ],
)
def test_forgotten_code_change(old: str, new: str, expected: Drift | None) -> None:
    assert forgotten_code_change("m", old.encode(), new.encode()) == expected
