"""Control frames (formats.md §7): exact bytes, limits, and every way a frame can be bad."""

from __future__ import annotations

import asyncio
import struct

import pytest

from relhandler.control.protocol import (
    MAX_FRAME,
    auth_response,
    decode,
    encode,
    read_frame,
)
from relhandler.errors import ProtocolError


def test_encode_is_big_endian_length_then_compact_json() -> None:
    assert encode({"id": 1, "op": "ping"}) == b'\x00\x00\x00\x14{"id":1,"op":"ping"}'


def test_round_trip_keeps_unicode() -> None:
    frame = encode({"ok": "héllo ✓"})
    assert decode(frame[4:]) == {"ok": "héllo ✓"}
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4


def test_auth_response_is_hmac_sha256_rfc4231_case_2() -> None:
    challenge = b"what do ya want for nothing?".hex()
    assert auth_response(b"Jefe", challenge) == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_encode_refuses_a_body_over_the_limit() -> None:
    with pytest.raises(ProtocolError, match=f"exceeds the {MAX_FRAME}-byte limit"):
        encode({"ok": "x" * MAX_FRAME})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"\xff\xfe", "not UTF-8 JSON", id="not-utf8"),
        pytest.param(b"{nope", "not UTF-8 JSON", id="not-json"),
        pytest.param(b"[1, 2]", "must be an object", id="array"),
        pytest.param(b'"s"', "must be an object", id="string"),
        pytest.param(b"", "not UTF-8 JSON", id="empty"),
    ],
)
def test_decode_rejects(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(body)


async def _read(data: bytes, *, eof: bool = True) -> dict[str, object]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return await read_frame(reader)


async def test_read_frame_reads_exactly_one_frame() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode({"a": 1}) + encode({"b": 2}))
    assert await read_frame(reader) == {"a": 1}
    assert await read_frame(reader) == {"b": 2}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(struct.pack(">I", MAX_FRAME + 1), "exceeds the", id="oversized-header"),
        pytest.param(encode({"auth": "ab" * 32})[:10], "middle of a frame", id="cut-body"),
        pytest.param(b"\x00\x00", "middle of a frame", id="cut-header"),
        pytest.param(b"\x00\x00\x00\x05hello", "not UTF-8 JSON", id="garbage"),
    ],
)
async def test_read_frame_rejects(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        await _read(data)


async def test_oversized_header_fails_before_the_body_arrives() -> None:
    # the limit is enforced on the length prefix: no 4 GiB buffer is ever waited for
    with pytest.raises(ProtocolError, match="exceeds the"):
        await asyncio.wait_for(_read(struct.pack(">I", 0xFFFFFFFF), eof=False), 5)
