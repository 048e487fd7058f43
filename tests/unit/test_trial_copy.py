"""The preflight's copy of a live state: deep where it can be, shared where it cannot."""

from __future__ import annotations

import socket
import threading

from relhandler.handler.install import trial_copy


def test_plain_state_is_a_full_deep_copy() -> None:
    state = {"n": 1, "items": [1, {"a": [2]}], "t": (1, [3])}
    c = trial_copy(state)
    assert c == state
    c["items"][1]["a"].append(9)
    c["t"][1].append(9)
    assert state == {"n": 1, "items": [1, {"a": [2]}], "t": (1, [3])}


def test_live_resources_are_shared_and_the_rest_still_copied() -> None:
    a, b = socket.socketpair()
    lock = threading.Lock()
    try:
        shared = [1, 2]
        state = {"sock": a, "lock": lock, "lines": [1, 2], "pair": (a, shared), "again": shared}
        c = trial_copy(state)
        assert c["sock"] is a and c["lock"] is lock and c["pair"][0] is a
        assert c["lines"] == [1, 2] and c["lines"] is not state["lines"]
        # sharing inside the state is kept in the copy, as deepcopy keeps it
        assert c["pair"][1] is c["again"] and c["again"] is not shared
        c["lines"].append(3)
        assert state["lines"] == [1, 2]
    finally:
        a.close()
        b.close()


def test_self_referencing_state() -> None:
    a, b = socket.socketpair()
    try:
        state: dict[str, object] = {"sock": a}
        state["me"] = state
        c = trial_copy(state)
        assert c["me"] is c and c is not state and c["sock"] is a
    finally:
        a.close()
        b.close()
