"""A socket that stops reading is closed as a slow consumer; the others keep getting every event.

The slow client is a plain TCP socket with a small receive buffer that completes the WebSocket
handshake, subscribes, and then never reads again, so the server's send buffer for it can only grow.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.names import unique
from tests.support.ports import LOOPBACK
from tests.support.served import Served, eventually, scrape, start_served, value
from tests.support.topology import APP_ID, APP_KEY

SEND_BUFFER_KB = 64
EVENT_BYTES = 25_000  # the Python SDK refuses more than 30 KB
EVENTS = 400  # ~10 MB: far more than the kernel buffers of a loopback socket plus the 64 KB allowance


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A `hub serve` that calls a socket slow once 64 KB wait unsent for it."""
    running = start_served(Path(tmp_path_factory.mktemp("slow")), "--max-send-buffer-kb", str(SEND_BUFFER_KB))
    try:
        yield running
    finally:
        running.process.close()


def masked_text(payload: str) -> bytes:
    """A client text frame (clients must mask, RFC 6455 5.3)."""
    data = payload.encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    length = len(data)
    header = struct.pack("!BB", 0x81, 0x80 | length) if length < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, length)
    return header + mask + body


def stalled_subscriber(port: int, channel: str) -> socket.socket:
    """Handshake, subscribe, wait for the confirmation, then never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((LOOPBACK, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    received = b""
    while b"connection_established" not in received:
        received += sock.recv(4096)
    sock.sendall(masked_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}})))
    while b"subscription_succeeded" not in received:
        received += sock.recv(4096)
    return sock


async def test_a_socket_that_stops_reading_is_closed_and_counted_while_a_reader_gets_everything(
    served: Served,
) -> None:
    channel = unique("slow")
    slow = await asyncio.to_thread(stalled_subscriber, served.port, channel)
    before = await scrape(served)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://{LOOPBACK}:{served.port}/app/{APP_KEY}?protocol=7", max_msg_size=0) as reader,
    ):
        await reader.receive_str()
        await reader.send_str(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        assert "subscription_succeeded" in await reader.receive_str()

        async def read_all() -> list[int]:
            seen: list[int] = []
            while len(seen) < EVENTS:
                frame = json.loads(await asyncio.wait_for(reader.receive_str(), timeout=10))
                if frame["event"] == "bulk":
                    seen.append(json.loads(frame["data"])["n"])
            return seen

        reading = asyncio.create_task(read_all())
        sdk = served.sdk()
        blob = "x" * EVENT_BYTES
        for n in range(EVENTS):
            await asyncio.to_thread(sdk.trigger, channel, "bulk", {"n": n, "blob": blob})
        assert await reading == list(range(EVENTS)), "the reading subscriber got every event, in order"

    after = await scrape(served)
    assert (
        value(after, "hub_slow_consumer_disconnects_total", app_id=APP_ID)
        == value(before, "hub_slow_consumer_disconnects_total", app_id=APP_ID) + 1
    )

    async def closed_as_slow() -> bool:
        # The server waits a grace period for a close handshake the stalled peer never reads, then aborts.
        samples = await scrape(served)
        return value(samples, "hub_disconnections_total", app_id=APP_ID, reason="slow_consumer") == 1

    await eventually(closed_as_slow, timeout=10)
    slow.close()
