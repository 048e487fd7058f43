"""Declared state types: which declaration is found, and which states match (shallowly)."""

from __future__ import annotations

import dataclasses
import sys
import types
from typing import Any, Literal, TypedDict

import pydantic
import pytest

from relhandler.runtime.statetype import (
    Mismatch,
    check_state,
    declared_state_type,
    state_mismatch,
)


class TD(TypedDict):
    count: int
    names: list[str]


class TDPartial(TypedDict, total=False):
    note: str


@dataclasses.dataclass
class DC:
    count: int
    names: list[str]
    ratio: float = 0.0
    mode: Literal["a", "b"] = "a"
    owner: str | None = None


class PM(pydantic.BaseModel):
    count: int
    names: list[str]


def _module(src: str) -> types.ModuleType:
    """A fresh module object from ``src`` (as a code server load makes one)."""
    m = types.ModuleType("fx_statetype_mod")
    sys.modules[m.__name__] = m  # dataclasses look their module up while they are made
    try:
        exec(src, m.__dict__)
    finally:
        del sys.modules[m.__name__]
    return m


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("from typing import TypedDict\nclass State(TypedDict):\n    n: int\n", "State"),
        (
            "from dataclasses import dataclass\n@dataclass\nclass Counter:\n    n: int\n"
            "def init(args) -> Counter:\n    return ('ok', Counter(0))\n",
            "Counter",
        ),
        (
            "from __future__ import annotations\nfrom dataclasses import dataclass\n"
            "@dataclass\nclass S:\n    n: int\n"
            "def init(args) -> tuple[str, S]:\n    return ('ok', S(0))\n",
            "S",
        ),
        ("def init(args):\n    return ('ok', {})\n", None),
        ("State = dict\ndef init(args) -> dict:\n    return ('ok', {})\n", None),
        ("def init(args) -> 'Nowhere':\n    return ('ok', {})\n", None),
    ],
    ids=["State-typeddict", "init-returns-class", "init-tuple", "none", "plain-dict", "unresolved"],
)
def test_declared_state_type(src: str, expected: str | None) -> None:
    t = declared_state_type(_module(src))
    assert (t.__name__ if t is not None else None) == expected


OK: list[tuple[Any, Any]] = [
    (TD, {"count": 1, "names": []}),
    (TD, {"count": 1, "names": ["a"], "extra": 1}),  # shallow: extra keys are not checked
    (TDPartial, {}),
    (DC, DC(1, ["x"])),
    (DC, DC(1, ["x"], ratio=1)),  # an int is a float
    (DC, DC(1, ["x"], owner="me")),
    (PM, PM(count=1, names=[])),
    (PM, {"count": 1, "names": ["a"]}),
]


@pytest.mark.parametrize(("declared", "state"), OK, ids=[f"ok-{i}" for i in range(len(OK))])
def test_matching_states(declared: Any, state: Any) -> None:
    assert state_mismatch(state, declared) is None


BAD: list[tuple[Any, Any, str | None, str]] = [
    (TD, {"count": 1}, "names", "is missing"),
    (TD, {"count": "1", "names": []}, "count", "is str '1', declared int"),
    (TD, {"count": 1, "names": ()}, "names", "declared list[str]"),
    (TD, [1, 2], None, "expected a dict"),
    (TDPartial, {"note": 3}, "note", "declared str"),
    (DC, {"count": 1, "names": []}, None, "expected a DC"),
    (DC, DC(1, "x"), "names", "declared list[str]"),  # type: ignore[arg-type]
    (DC, DC(1, [], mode="c"), "mode", "declared Literal['a', 'b']"),  # type: ignore[arg-type]
    (PM, {"count": 1}, "names", "field required"),
    (PM, {"count": "x", "names": []}, "count", "valid integer"),
]


@pytest.mark.parametrize(
    ("declared", "state", "field", "text"),
    BAD,
    ids=[f"bad-{i}" for i in range(len(BAD))],
)
def test_mismatching_states_name_the_field(
    declared: Any, state: Any, field: str | None, text: str
) -> None:
    m = state_mismatch(state, declared)
    assert isinstance(m, Mismatch)
    assert m.field == field
    assert text in str(m)
    assert f"{declared.__module__}.{declared.__qualname__}" in str(m)


def test_an_instance_of_an_earlier_version_of_the_class_is_checked_by_its_fields() -> None:
    # a module loaded again makes a new class with the same module and name: an old
    # instance passes when its fields fit, and names the field when one is missing
    src = "from dataclasses import dataclass\n@dataclass\nclass State:\n    count: int\n"
    old = _module(src).State(3)
    new_same = _module(src)
    assert check_state(new_same, old) is None
    grown = _module(
        "from dataclasses import dataclass, field\n@dataclass\nclass State:\n"
        "    count: int\n    names: list = field(default_factory=list)\n"
    )
    m = check_state(grown, old)
    assert m is not None and m.field == "names" and "is missing" in str(m)


def test_no_declared_type_checks_nothing() -> None:
    assert check_state(_module("def init(a):\n    return ('ok', 1)\n"), object()) is None
