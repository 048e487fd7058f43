"""``assert_code_change_roundtrip`` over given states (pure code: no node)."""

from __future__ import annotations

import types

import pytest
from hypothesis import strategies as st

from relhandler.testing import RoundtripError, assert_code_change_roundtrip


def _module(src: str) -> types.ModuleType:
    m = types.ModuleType("m")
    exec(src, m.__dict__)
    return m


GOOD = _module(
    """
def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        return ("ok", {"n": state["n"]})
    state["mutated"] = True  # a copy: the caller's state is safe
    return ("ok", {"n": state["n"], "history": list(extra)})
"""
)


def test_states_that_come_back_pass() -> None:
    assert_code_change_roundtrip(GOOD, [{"n": 0}, {"n": 5}], from_vsn="1", extra=[])


def test_the_first_state_that_does_not_come_back_is_named() -> None:
    with pytest.raises(RoundtripError) as e:
        assert_code_change_roundtrip(
            GOOD, [{"n": 1}, {"n": 2, "x": 1}, {"x": 2}], from_vsn="1", extra=[]
        )
    assert e.value.state == {"n": 2, "x": 1}
    assert "lost keys ['x']" in str(e.value)


def test_a_code_change_that_raises_names_the_state_and_direction() -> None:
    with pytest.raises(
        RoundtripError, match=r"m\.code_change up raised KeyError: 'n' on state \{\}"
    ):
        assert_code_change_roundtrip(GOOD, [{}], from_vsn="1")


def test_a_bad_return_is_a_failure() -> None:
    m = _module("def code_change(old_vsn, state, extra):\n    return state\n")
    with pytest.raises(
        RoundtripError, match=r"returned 3 for state 3; expected \('ok', new_state\)"
    ):
        assert_code_change_roundtrip(m, [3], from_vsn="1")


def test_gen_statem_and_async_code_change() -> None:
    m = _module(
        """
async def code_change(old_vsn, state, data, extra):
    if isinstance(old_vsn, tuple):
        return ("ok", state, {k: v for k, v in data.items() if k != "since"})
    return ("ok", state, {**data, "since": 0})
"""
    )
    assert_code_change_roundtrip(m, [("idle", {"n": 1})], from_vsn="1")
    assert_code_change_roundtrip(
        m, st.tuples(st.sampled_from(["idle", "busy"]), st.fixed_dictionaries({})), from_vsn="1"
    )


def test_a_strategy_shrinks_to_the_smallest_failing_state() -> None:
    m = _module(
        """
def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple):
        return ("ok", state[:3])  # the way down keeps three items only
    return ("ok", list(state))
"""
    )
    with pytest.raises(RoundtripError) as e:
        assert_code_change_roundtrip(m, st.lists(st.integers()), from_vsn="1")
    assert e.value.state == [0, 0, 0, 0]
