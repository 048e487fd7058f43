"""The callbacks are plain functions over plain data: test them directly."""

from {{pkg}} import visits


def test_visits_count():
    assert visits.init(None) == ("ok", {"visits": 0})
    assert visits.handle_call("visit", None, {"visits": 2}) == ("reply", 3, {"visits": 3})


def test_code_change_keeps_state():
    assert visits.code_change("0.1.0", {"visits": 1}, []) == ("ok", {"visits": 1})
