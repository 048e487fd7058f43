"""Throughput of an active socket into its owner's mailbox, per framing, on loopback.

    .venv/bin/python -m bench.sockets_throughput [--mb N]

A plain asyncio client sends N MiB as fast as the socket takes them; a raw process owns
the socket (``active=True``) and takes every message. Printed: frames/s and MiB/s for
line (100-byte lines), raw, and packet 4 (1 KiB packets), and, for comparison, a bare
asyncio StreamReader loop reading the same lines with no process in between.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from relhandler.runtime import Node, receive, sockets


async def _one(node: Node, mb: int, packet: Any, frame: bytes) -> tuple[float, int]:
    n = (mb << 20) // len(frame) // 256 * 256  # whole blobs of 256 frames
    conns: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_connect(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await conns.put(w)

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    done = asyncio.get_running_loop().create_future()
    want = n * len(frame) if packet == "raw" else n

    async def owner() -> None:
        await sockets.connect("127.0.0.1", port, packet=packet)
        got = 0
        while got < want:
            m = await receive()
            got += len(m[2]) if packet == "raw" else 1
        done.set_result(None)

    node.spawn(owner)
    w = await conns.get()
    blob = frame * 256
    t = time.perf_counter()
    for _ in range(n // 256):
        w.write(blob)
        await w.drain()
    await done
    el = time.perf_counter() - t
    w.close()
    srv.close()
    return el, n


async def _bare(mb: int, frame: bytes) -> tuple[float, int]:
    n = (mb << 20) // len(frame) // 256 * 256  # whole blobs of 256 frames
    conns: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()
    done = asyncio.get_running_loop().create_future()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await conns.put(w)

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    r, cw = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
    w = await conns.get()

    async def reader() -> None:
        for _ in range(n):
            await r.readline()
        done.set_result(None)

    rt = asyncio.create_task(reader())
    blob = frame * 256
    t = time.perf_counter()
    for _ in range(n // 256):
        w.write(blob)
        await w.drain()
    await done
    await rt
    cw.close()  # kept open until here: a dropped StreamWriter closes its connection
    srv.close()
    return time.perf_counter() - t, n


async def main(mb: int) -> None:
    line = b"x" * 99 + b"\n"
    pkt = (1020).to_bytes(4, "big") + b"p" * 1020
    async with Node() as node:
        for name, packet, frame in (
            ("line (100 B)", "line", line),
            ("raw", "raw", b"r" * 1024),
            ("packet 4 (1 KiB)", 4, pkt),
        ):
            el, n = await _one(node, mb, packet, frame)
            rate = "" if packet == "raw" else f"{n / el:10,.0f} frames/s"
            print(f"{name:18} {mb / el:7.1f} MiB/s  {rate}")
    el, n = await _bare(mb, line)
    print(f"{'bare readline':18} {mb / el:7.1f} MiB/s  {n / el:10,.0f} lines/s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=16)
    asyncio.run(main(ap.parse_args().mb))
