"""Closed sockets give their memory back: connect, subscribe and close the same number of sockets again and
again against an in-process `hub serve`; the Python memory still held afterwards must not grow per round.

(A node that froze live transports into the garbage collector's permanent generation kept about 2.5 KB
of every closed socket: asyncio transports are freed by the cycle collector.)
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import tracemalloc
from collections.abc import Callable

from benchmarks.wsclient import masked_frame
from hub.config import parse_settings
from hub.server import Node
from tests.support.ports import LOOPBACK, free_port

SOCKETS = 300
ROUNDS = 3


async def one_socket(port: int, channel: str, release: asyncio.Event, polite: bool) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n".encode()
    )
    received = b""
    while b"connection_established" not in received:
        received += await reader.read(4096)
    writer.write(masked_frame(1, json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode()))
    while b"subscription_succeeded" not in received:
        received += await reader.read(4096)
    await release.wait()
    if polite:  # half of them close with a close frame, the others just drop the TCP connection
        writer.write(masked_frame(8, (1000).to_bytes(2, "big")))
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()


async def until(condition: Callable[[], bool]) -> None:
    """Poll the node's own bookkeeping (it has no event to wait on for this)."""
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_memory_held_after_sockets_close_does_not_grow_round_after_round() -> None:
    port = free_port()
    settings = parse_settings(["serve", "--host", LOOPBACK, "--port", str(port), "--metrics-port", "0"], {})
    node = Node(settings, {})
    await node.start()
    ws = node.ws
    assert ws is not None
    held: list[int] = []
    try:
        for round_number in range(ROUNDS):
            release = asyncio.Event()
            sockets = [
                asyncio.create_task(one_socket(port, f"memory-{i % 20}", release, polite=bool(i % 2)))
                for i in range(SOCKETS)
            ]
            await until(lambda: len(ws.connections) == SOCKETS)
            release.set()
            await asyncio.gather(*sockets)
            await until(lambda: not ws.connections and not ws._tasks)
            await asyncio.sleep(0.2)
            gc.collect()
            if round_number == 0:
                tracemalloc.start()  # after one round: caches and the one-time freeze are behind us
            else:
                held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
        await node.stop()
    growth_per_socket = (held[-1] - held[0]) / SOCKETS
    assert growth_per_socket < 500, f"{growth_per_socket:.0f} bytes held per closed socket; rounds: {held}"
