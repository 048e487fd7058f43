"""The callbacks are plain functions over plain data: test them directly."""

from relhandler.testing import assert_code_change_roundtrip
from {{pkg}} import server


def test_init_and_count():
    assert server.init(None) == ("ok", {"count": 0})
    assert server.handle_call("count", None, {"count": 3}) == ("reply", 3, {"count": 3})


def test_code_change_keeps_state():
    assert server.code_change("0.1.0", {"count": 1}, []) == ("ok", {"count": 1})
    assert server.code_change(("down", "0.1.0"), {"count": 1}, []) == ("ok", {"count": 1})


def test_code_change_round_trips():
    # up then down gives every 0.1.0 state back (or pass a Hypothesis strategy of states)
    assert_code_change_roundtrip(server, [{"count": 0}, {"count": 7}], from_vsn="0.1.0")
