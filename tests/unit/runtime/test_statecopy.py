"""The state copier: plain data copied, everything else shared untouched (issue 14.4)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import enum
import gc
import os
import socket
import threading
from typing import Any, ClassVar, NamedTuple

import pytest

from relhandler.runtime.statecopy import copy_state, register_copier


class FdWrapper:
    """A pure-Python fd owner whose finalizer closes the fd (what a copy must never run)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclasses.dataclass
class FdRecord:
    fd: int

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    x: int
    tags: list[str]


@dataclasses.dataclass
class Cart:
    KIND: ClassVar[str] = "cart"
    items: list[Point]
    color: Color = Color.RED
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


class Pair(NamedTuple):
    a: list[int]
    b: int


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_finalizer_of_a_copy_never_closes_the_live_fd() -> None:
    r, w = os.pipe()
    r2, w2 = os.pipe()
    try:
        state = {"conn": FdWrapper(w), "rec": FdRecord(w2), "n": [1]}
        c = copy_state(state)
        assert c["conn"] is state["conn"] and c["rec"] is state["rec"]  # shared, not copied
        assert c["n"] == [1] and c["n"] is not state["n"]
        del c
        gc.collect()
        assert _fd_open(w) and _fd_open(w2)
        # what the old deepcopy-based preflight did: the copy's finalizer closes the live fd
        dup = copy.deepcopy(state["conn"])
        del dup
        gc.collect()
        assert not _fd_open(w)
    finally:
        for fd in (r, r2, w2):
            os.close(fd)


def test_plain_data_is_copied_all_the_way_down() -> None:
    state = {
        "cart": Cart([Point(1, ["a"])], meta={"k": (1, [2])}),
        "pair": Pair([1], 2),
        "q": collections.deque([[1]], maxlen=5),
        "dd": collections.defaultdict(list, {"x": [1]}),
        "s": {1, 2},
        "fs": frozenset({3}),
    }
    c = copy_state(state)
    assert c == state
    cart = c["cart"]
    assert type(cart) is Cart and cart is not state["cart"] and cart.color is Color.RED
    assert cart.items[0] is not state["cart"].items[0] and cart.items[0] == Point(1, ["a"])
    cart.items[0].tags.append("b")
    cart.meta["k"][1].append(3)
    c["pair"].a.append(9)
    c["q"][0].append(9)
    c["dd"]["x"].append(9)
    c["dd"]["new"].append(1)  # the default factory came along
    assert state["cart"].items[0].tags == ["a"] and state["cart"].meta == {"k": (1, [2])}
    assert state["pair"].a == [1] and state["q"][0] == [1] and state["dd"] == {"x": [1]}
    assert c["q"].maxlen == 5


def test_mutable_plain_buffers_and_namespaces_are_copied() -> None:
    # a code_change that edits a protocol buffer in place must not edit the live one
    import array
    import types

    state = {
        "buf": bytearray(b"\x01hello"),
        "ints": array.array("i", [1, 2]),
        "ns": types.SimpleNamespace(seen=[1], buf=bytearray(b"x")),
    }
    c = copy_state(state)
    assert c == state
    del c["buf"][:1]
    c["ints"].append(3)
    c["ns"].seen.append(2)
    c["ns"].buf += b"y"
    c["ns"].new = 1
    assert state == {
        "buf": bytearray(b"\x01hello"),
        "ints": array.array("i", [1, 2]),
        "ns": types.SimpleNamespace(seen=[1], buf=bytearray(b"x")),
    }


def test_live_resources_and_unknown_objects_are_shared() -> None:
    a, b = socket.socketpair()
    lock = threading.Lock()

    class Opaque:
        def __init__(self) -> None:
            self.items = [1]

    try:
        o = Opaque()
        shared = [1, 2]
        state = {"sock": a, "lock": lock, "o": o, "pair": (a, shared), "again": shared}
        c = copy_state(state)
        assert c["sock"] is a and c["lock"] is lock and c["o"] is o
        assert c["pair"][1] is c["again"] and c["again"] is not shared  # sharing kept
    finally:
        a.close()
        b.close()


async def test_stream_writer_is_shared_and_nothing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        state = {"r": reader, "w": writer, "buf": [b"x"]}
        for _ in range(3):
            c = copy_state(state)
            assert c["w"] is writer and c["r"] is reader
            del c
        gc.collect()
        await asyncio.sleep(0.01)
        assert not writer.is_closing()
        assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


def test_cycles_stay_cycles() -> None:
    state: dict[str, Any] = {"l": []}
    state["me"] = state
    state["l"].append(state["l"])
    cart = Cart([])
    cart.meta["self"] = cart
    state["cart"] = cart
    c = copy_state(state)
    assert c["me"] is c and c["l"][0] is c["l"] and c is not state
    assert c["cart"].meta["self"] is c["cart"] and c["cart"] is not cart


def test_registered_copier_extends_the_list() -> None:
    class Grid:
        def __init__(self, cells: list[list[int]]) -> None:
            self.cells = cells

    class SubGrid(Grid):
        pass

    g = SubGrid([[1]])
    assert copy_state({"g": g})["g"] is g  # unknown: shared
    register_copier(Grid, lambda x, cp: type(x)(cp(x.cells)))
    c = copy_state({"g": g, "again": g})
    assert type(c["g"]) is SubGrid and c["g"] is not g and c["g"] is c["again"]
    c["g"].cells[0].append(2)
    assert g.cells == [[1]]


def test_pydantic_and_attrs_instances_are_copied() -> None:
    pydantic = pytest.importorskip("pydantic")
    attrs = pytest.importorskip("attrs")

    class Item(pydantic.BaseModel):
        tags: list[str]

    class Order(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(frozen=True)
        items: list[Item]
        note: str = "x"

    @attrs.define
    class Box:
        content: list[int]

    o = Order(items=[Item(tags=["a"])])
    box = Box([1])
    c = copy_state({"o": o, "box": box})
    assert c["o"] == o and c["o"] is not o and type(c["o"]) is Order
    assert c["o"].model_fields_set == o.model_fields_set
    c["o"].items[0].tags.append("b")
    c["box"].content.append(2)
    assert o.items[0].tags == ["a"] and box.content == [1]
    assert c["box"] == Box([1, 2])
