"""Control frames (formats.md §7): 4-byte big-endian length, then a UTF-8 JSON object.

The server opens with ``{"challenge": hex}``; the client answers
``{"auth": hmac_sha256(cookie, challenge)}``; then requests ``{"id", "op", "args"}`` and
replies ``{"id", "ok"}`` / ``{"id", "error"}``, with optional ``{"id", "event"}`` progress
frames first. The cookie never crosses the socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import struct
from typing import Any

from relhandler.errors import ProtocolError

__all__ = [
    "MAX_FRAME",
    "auth_response",
    "decode",
    "encode",
    "read_frame",
    "recv_frame",
    "send_frame",
    "write_frame",
]

MAX_FRAME = 1 << 20
"""Largest frame body in bytes (1 MiB); bigger frames close the connection."""
_HEADER = struct.Struct(">I")


def auth_response(cookie: bytes, challenge_hex: str) -> str:
    """``hmac_sha256(cookie, challenge)`` as hex."""
    return hmac.new(cookie, bytes.fromhex(challenge_hex), hashlib.sha256).hexdigest()


def encode(obj: dict[str, Any]) -> bytes:
    """One frame for ``obj``; ``ProtocolError`` if its body exceeds ``MAX_FRAME``."""
    body = json.dumps(obj, separators=(",", ":"), default=str).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    """A frame body back to its JSON object; ``ProtocolError`` unless a UTF-8 JSON object."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"malformed frame: not UTF-8 JSON ({e})") from e
    except RecursionError as e:
        raise ProtocolError("malformed frame: JSON nested too deeply") from e
    if not isinstance(obj, dict):
        raise ProtocolError("malformed frame: the JSON value must be an object")
    return obj


def _length(header: bytes) -> int:
    (n,) = _HEADER.unpack(header)
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
    return int(n)


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """Read one frame; ``ProtocolError`` on oversize, garbage or a frame cut short."""
    try:
        n = _length(await reader.readexactly(4))
        return decode(await reader.readexactly(n))
    except asyncio.IncompleteReadError as e:
        raise ProtocolError("connection closed in the middle of a frame") from e


async def write_frame(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    """Write one frame and wait for the transport to take it (back-pressure)."""
    writer.write(encode(obj))
    await writer.drain()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProtocolError("the node closed the connection")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> dict[str, Any]:
    """Blocking read of one frame (client side)."""
    return decode(_recv_exactly(sock, _length(_recv_exactly(sock, 4))))


def send_frame(sock: socket.socket, obj: dict[str, Any]) -> None:
    """Blocking write of one frame (client side)."""
    sock.sendall(encode(obj))
