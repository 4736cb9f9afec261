"""permessage-deflate (RFC 7692): negotiated when offered, compressed once per message, off by configuration.

pusher-js runs on Node's `ws` here (HUB_JS_WEBSOCKET=ws in the driver), which offers the extension the way
browsers do; pusher-js on faye-websocket (its default Node transport) offers nothing and must get plain
frames. A raw socket looks at the frames themselves: RSV1 set on a large event, unset below
--compression-min-bytes, and a compressed client frame is inflated.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hub.ws.frame_parser import unmask
from tests.support.js_clients import JsClients, require_js_harness
from tests.support.names import unique
from tests.support.ports import LOOPBACK
from tests.support.served import Served, scrape, start_served, value
from tests.support.topology import APP_ID, APP_KEY

MIN_BYTES = 200
# JSON that compresses well, like chat payloads do: about 20 KB that deflate brings under 1 KB.
BIG = {"messages": [{"user": "alice", "text": "hello there", "n": n % 10} for n in range(500)]}
OFFER = "permessage-deflate; client_max_window_bits"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`hub serve` with deflate on (the default) and a known minimum size."""
    running = start_served(Path(tmp_path_factory.mktemp("deflate")), "--compression-min-bytes", str(MIN_BYTES))
    try:
        yield running
    finally:
        running.process.close()


@pytest.fixture(scope="module")
def served_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`hub serve --compression off`."""
    running = start_served(Path(tmp_path_factory.mktemp("nodeflate")), "--compression", "off")
    try:
        yield running
    finally:
        running.process.close()


@pytest.fixture
async def js_ws() -> AsyncIterator[JsClients]:
    """pusher-js on Node's `ws`, which offers permessage-deflate."""
    require_js_harness()
    async with JsClients(env={"HUB_JS_WEBSOCKET": "ws"}) as clients:
        yield clients


@pytest.fixture
async def js() -> AsyncIterator[JsClients]:
    """pusher-js on its default Node transport (faye-websocket), which offers no extension."""
    require_js_harness()
    async with JsClients() as clients:
        yield clients


async def _sent_bytes_for_one_big_event(served: Served, js: JsClients) -> tuple[float, float]:
    """Subscribe one pusher-js client, trigger BIG; (frame bytes sent for it, deflate connections added)."""
    channel = unique("deflate")
    before = await scrape(served)
    await js.connect("a", port=served.port, key=APP_KEY)
    await js.subscribe("a", channel)
    middle = await scrape(served)
    await asyncio.to_thread(served.sdk().trigger, channel, "big", BIG)
    record = await js.wait_for("a", event="big", channel=channel)
    assert record.data == BIG, "the event arrives intact"
    after = await scrape(served)
    sent = value(after, "hub_ws_sent_bytes_total", app_id=APP_ID) - value(
        middle, "hub_ws_sent_bytes_total", app_id=APP_ID
    )
    negotiated = value(middle, "hub_ws_deflate_connections_total", app_id=APP_ID) - value(
        before, "hub_ws_deflate_connections_total", app_id=APP_ID
    )
    return sent, negotiated


async def test_pusher_js_on_ws_negotiates_deflate_and_receives_a_compressed_event(
    served: Served, js_ws: JsClients
) -> None:
    sent, negotiated = await _sent_bytes_for_one_big_event(served, js_ws)
    assert negotiated == 1
    raw = len(json.dumps(BIG))
    assert sent < raw / 4, f"{sent} bytes on the wire for a {raw}-byte event: not compressed"


async def test_pusher_js_without_the_extension_receives_the_same_event_uncompressed(
    served: Served, js: JsClients
) -> None:
    sent, negotiated = await _sent_bytes_for_one_big_event(served, js)
    assert negotiated == 0
    assert sent > len(json.dumps(BIG))


# --- the wire, by hand ---------------------------------------------------------------------------


def masked(opcode: int, payload: bytes, *, rsv1: bool = False) -> bytes:
    """A client frame (masked, RFC 6455 5.3)."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((first, 0x80 | n)) if n < 126 else struct.pack("!BBH", first, 0x80 | 126, n)
    return head + mask + unmask(payload, mask)


class Wire:
    """A blocking raw WebSocket client: reads whole frames with their flags."""

    def __init__(self, port: int, extensions: str | None) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
        self.sock.sendall(
            f"GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.head = head.decode()

    def frame(self) -> tuple[int, bool, bytes]:
        """(opcode, rsv1, payload) of the next frame."""
        while True:
            if len(self.buf) >= 2:
                length, start = self.buf[1] & 0x7F, 2
                if length == 126 and len(self.buf) >= 4:
                    length, start = struct.unpack("!H", self.buf[2:4])[0], 4
                elif length == 127 and len(self.buf) >= 10:
                    length, start = struct.unpack("!Q", self.buf[2:10])[0], 10
                if (length < 126 or start > 2) and len(self.buf) >= start + length:
                    first = self.buf[0]
                    payload, self.buf = self.buf[start : start + length], self.buf[start + length :]
                    return first & 0x0F, bool(first & 0x40), payload
            self.buf += self.sock.recv(65536)

    def text(self) -> tuple[bool, dict[str, object]]:
        """The next text frame: whether it was compressed, and its JSON."""
        _, rsv1, payload = self.frame()
        if rsv1:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        return rsv1, json.loads(payload)

    def send(self, message: dict[str, object], *, compress: bool = False) -> None:
        data = json.dumps(message).encode()
        if compress:
            stream = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = (stream.compress(data) + stream.flush(zlib.Z_SYNC_FLUSH))[:-4]
        self.sock.sendall(masked(0x1, data, rsv1=compress))


def _subscribed(port: int, channel: str, *, compress_subscribe: bool) -> Wire:
    wire = Wire(port, OFFER)
    assert "permessage-deflate; server_no_context_takeover; client_no_context_takeover" in wire.head
    _, established = wire.text()
    assert established["event"] == "pusher:connection_established"
    wire.send({"event": "pusher:subscribe", "data": {"channel": channel}}, compress=compress_subscribe)
    _, answer = wire.text()
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    return wire


async def test_large_events_go_out_with_rsv1_and_small_ones_plain_and_a_compressed_subscribe_is_inflated(
    served: Served,
) -> None:
    channel = unique("wire")
    wire = await asyncio.to_thread(_subscribed, served.port, channel, compress_subscribe=True)
    try:
        sdk = served.sdk()
        await asyncio.to_thread(sdk.trigger, channel, "small", {"n": 1})
        await asyncio.to_thread(sdk.trigger, channel, "big", BIG)
        small_compressed, small = await asyncio.to_thread(wire.text)
        big_compressed, big = await asyncio.to_thread(wire.text)
    finally:
        wire.sock.close()
    assert (small["event"], small_compressed) == ("small", False), f"under {MIN_BYTES} bytes: sent plain"
    assert (big["event"], big_compressed) == ("big", True)
    assert json.loads(str(big["data"])) == BIG


async def test_two_deflate_sockets_get_identical_compressed_bytes(served: Served) -> None:
    channel = unique("same")
    first = await asyncio.to_thread(_subscribed, served.port, channel, compress_subscribe=False)
    second = await asyncio.to_thread(_subscribed, served.port, channel, compress_subscribe=False)
    try:
        for _ in range(2):  # the second message must not depend on the first (no context takeover)
            await asyncio.to_thread(served.sdk().trigger, channel, "big", BIG)
        frames = [await asyncio.to_thread(w.frame) for w in (first, first, second, second)]
    finally:
        first.sock.close()
        second.sock.close()
    assert all(rsv1 for _, rsv1, _ in frames)
    assert len({payload for _, _, payload in frames}) == 1, "one compressed buffer per message for every socket"


async def test_compression_off_declines_the_offer(served_off: Served) -> None:
    wire = await asyncio.to_thread(Wire, served_off.port, OFFER)
    try:
        assert " 101 " in wire.head.splitlines()[0]
        assert "sec-websocket-extensions" not in wire.head.lower()
    finally:
        wire.sock.close()


async def test_an_offer_the_server_cannot_honour_is_declined(served: Served) -> None:
    wire = await asyncio.to_thread(Wire, served.port, "permessage-deflate; server_max_window_bits=10")
    try:
        assert "sec-websocket-extensions" not in wire.head.lower()
    finally:
        wire.sock.close()
