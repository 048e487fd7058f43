"""bench/web.py's counting rules on made-up answers (pure: no server, no timing asserted)."""

from __future__ import annotations

import pytest

from bench.web import Ws, analyse


def _client(answers: list[tuple[float, str, int, int]], reconnects: int = 0) -> Ws:
    return Ws(answers=[(t, t + 0.01, v, c, n) for t, v, c, n in answers], reconnects=reconnects)


def test_kept_connection_and_state_need_continuing_counters_on_v2() -> None:
    kept = _client([(0.0, "v1", 1, 10), (1.0, "v1", 2, 20), (2.0, "v2", 3, 30)])
    # reconnected: its per-connection counter restarted, and the per-node one went back
    dropped = _client([(0.0, "v1", 1, 11), (1.5, "v2", 1, 1)], reconnects=1)
    row = analyse([kept, dropped], deployed=1.2, asked=1.1)
    assert (row["kept"], row["state_kept"], row["on_v2"]) == (1, 1, 2)
    assert row["first_v2_s"] == pytest.approx(0.41)
    assert row["all_v2_s"] == pytest.approx(0.91)
    assert row["reconnects"] == 1


def test_a_client_never_on_v2_is_neither_kept_nor_timed() -> None:
    stuck = _client([(0.0, "v1", 1, 1), (2.0, "v1", 2, 2)])
    moved = _client([(0.0, "v1", 1, 3), (2.0, "v2", 2, 4)])
    row = analyse([stuck, moved], deployed=1.0, asked=1.0)
    assert (row["kept"], row["state_kept"], row["on_v2"]) == (1, 1, 1)
    assert row["all_v2_s"] is None
