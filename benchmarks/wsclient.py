"""A lean Pusher subscriber: raw asyncio protocol, hand-rolled WebSocket framing, batch timestamp scan.

Hot path (what one delivery costs the load generator): once a socket is subscribed, ``data_received``
walks the frame headers of the bytes the kernel handed over, finds every publish timestamp in them with
one regex pass (C speed), reads the clock once, and records each latency into the worker's preallocated
histogram. No JSON decoding, no per-frame object, no await. Non-event frames (pings, errors, close) are
rare and take the slow path. Guarded by the ``ramp`` scenario: the generator's CPU per 1,000 deliveries
is in every result.

Clients answer RFC 6455 pings and ``pusher:ping``, send masked frames as RFC 6455 requires, and reconnect
the way pusher-js does when a connection drops: at once, to the next URL in their list.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from benchmarks.histogram import Histogram
from hub.protocol.signatures import auth_token

EVENT_NAME = "bench"
# The event data is the JSON string {"t":<publish time_ns>,"s":<step>} embedded in the frame's JSON, so its
# quotes arrive escaped. Nothing else a server sends contains this pattern.
STAMP_RE = re.compile(rb'\\"t\\":(\d+),\\"s\\":(\d+)')
# Numbered events (the failover scenario) carry their sequence number right after the step.
SEQUENCE_RE = re.compile(rb'\\"s\\":\d+,\\"n\\":(\d+)')

_HANDSHAKE, _ESTABLISHING, _SUBSCRIBING, _SUBSCRIBED, _CLOSED = range(5)
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def stamp_data(step: int, now_ns: int | None = None) -> str:
    """The ``data`` string of a benchmark event: its publish time in ns and its step (ramp) number."""
    return f'{{"t":{time.time_ns() if now_ns is None else now_ns},"s":{step}}}'


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client-to-server frame: FIN set, payload masked with a fresh key (RFC 6455 5.3)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if not n:
        return header + mask
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + masked


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Complete (opcode, payload) frames at the start of ``buf`` and how many bytes they took.

    Server frames are never masked; compressed ones (RSV1) are inflated. Fragmented messages are not used by
    hub and not supported here.
    """
    frames: list[tuple[int, bytes]] = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        opcode = buf[pos] & 0x0F
        length = buf[pos + 1] & 0x7F
        start = pos + 2
        if length == 126:
            if n - pos < 4:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            start = pos + 4
        elif length == 127:
            if n - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            start = pos + 10
        end = start + length
        if end > n:
            break
        payload = buf[start:end]
        if buf[pos] & 0x40:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        frames.append((opcode, payload))
        pos = end
    return frames, pos


class Recorder:
    """One process's deliveries: a latency histogram and a count per step, created on first use."""

    def __init__(self) -> None:
        self.histograms: dict[bytes, Histogram] = {}
        self.other_frames = 0

    def record(self, now_ns: int, stamps: list[tuple[bytes, bytes]]) -> None:
        """Record every (publish time, step) found in one read, all received at ``now_ns``."""
        histograms = self.histograms
        for t, s in stamps:
            hist = histograms.get(s)
            if hist is None:
                hist = histograms[s] = Histogram()
            hist.record((now_ns - int(t)) // 1000)

    def take(self) -> dict[int, Histogram]:
        """Hand over the histograms by step and start afresh."""
        taken = {int(step): hist for step, hist in self.histograms.items()}
        self.histograms = {}
        return taken

    def delivered(self) -> dict[int, int]:
        """Deliveries recorded since the last ``take``, by step."""
        return {int(step): h.count for step, h in self.histograms.items()}


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One subscriber: the nodes it may connect to (tried in order) and the channel it joins."""

    urls: tuple[tuple[str, int], ...]
    channel: str


class Subscriber(asyncio.Protocol):
    """One WebSocket connection that subscribes to one channel and records the events it receives."""

    def __init__(self, pool: SubscriberPool, spec: ClientSpec, url_index: int) -> None:
        self.pool = pool
        self.spec = spec
        self.url_index = url_index
        self.state = _HANDSHAKE
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.socket_id = ""
        self.error: str | None = None
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subscribed_at_ns = 0
        self.sequences: list[int] | None = [] if pool.track_sequences else None
        self.dropped = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the upgrade request."""
        # uvloop's transports do not subclass asyncio.Transport but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        host, port = self.spec.urls[self.url_index]
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /app/{self.pool.app_key}?protocol=7&client=hub-bench&version=1.0 HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{self.pool.offer}\r\n"
        )
        self.transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        """Fast path once subscribed; handshake and control frames otherwise."""
        if self.state == _SUBSCRIBED:
            self._fast(data)
            return
        buf = self.buf + data if self.buf else data
        if self.state == _HANDSHAKE:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                self.buf = buf
                return
            status_line = buf[: buf.find(b"\r\n")]
            if b" 101 " not in status_line + b" ":
                self._fail(f"handshake refused: {status_line.decode(errors='replace')}")
                return
            self.state = _ESTABLISHING
            buf = buf[head_end + 4 :]
        frames, used = split_frames(buf)
        self.buf = buf[used:]
        for opcode, payload in frames:
            self._slow_frame(opcode, payload)
            if self.state == _SUBSCRIBED and self.buf:
                rest, self.buf = self.buf, b""
                self._fast(rest)
                return

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the pool (which may reconnect, as pusher-js would)."""
        was_subscribed = self.state == _SUBSCRIBED
        self.state = _CLOSED
        self.dropped = was_subscribed and not self.pool.closing
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(self.error or f"connection lost: {exc}"))
            self.subscribed.exception()  # mark retrieved: the pool reads it through its own wait
        self.pool.lost(self, was_subscribed)

    # -- frames -----------------------------------------------------------------------------

    def _fast(self, data: bytes) -> None:
        self.pool.bytes_received += len(data)
        buf = self.buf + data if self.buf else data
        n = len(buf)
        pos = 0
        texts = 0
        control = False
        inflated: list[bytes] = []
        while n - pos >= 2:
            length = buf[pos + 1]
            if length < 126:
                end = pos + 2 + length
            elif length == 126:
                if n - pos < 4:
                    break
                end = pos + 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
            else:
                if n - pos < 10:
                    break
                end = pos + 10 + int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if end > n:
                break
            if buf[pos] == 0x81:
                texts += 1
            elif buf[pos] == 0xC1:
                # permessage-deflate without context takeover: each message inflates on its own.
                start = pos + (2 if length < 126 else 4 if length == 126 else 10)
                inflated.append(zlib.decompressobj(-15).decompress(buf[start:end] + b"\x00\x00\xff\xff"))
            else:
                control = True
            pos = end
        self.buf = buf[pos:] if pos < n else b""
        if not pos:
            return
        stamps = STAMP_RE.findall(buf, 0, pos)
        for message in inflated:
            stamps += STAMP_RE.findall(message)
        if stamps:
            now_ns = time.time_ns()
            self.pool.recorder.record(now_ns, stamps)
            if self.sequences is not None:
                self._track(now_ns, buf[:pos], inflated)
        if control or texts + len(inflated) != len(stamps):
            # Rare: something besides our events arrived. Re-walk those bytes frame by frame.
            frames, _ = split_frames(buf[:pos])
            for opcode, payload in frames:
                if opcode != _TEXT or not STAMP_RE.search(payload):
                    self._slow_frame(opcode, payload)

    def _track(self, now_ns: int, raw: bytes, inflated: list[bytes]) -> None:
        """Keep the sequence numbers of numbered events in arrival order, and when each was first seen here."""
        assert self.sequences is not None
        numbers = [int(n) for n in SEQUENCE_RE.findall(raw)]
        for message in inflated:
            numbers += [int(n) for n in SEQUENCE_RE.findall(message)]
        self.sequences += numbers
        first_seen = self.pool.first_seen_ns
        for n in numbers:
            if n not in first_seen:
                first_seen[n] = now_ns

    def _slow_frame(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if opcode == _PING:
            transport.write(masked_frame(_PONG, payload))
            return
        if opcode == _CLOSE:
            if not transport.is_closing():
                transport.write(masked_frame(_CLOSE, payload[:2]))
                transport.close()
            return
        if opcode != _TEXT:
            return
        try:
            message = json.loads(payload)
        except ValueError:
            self.pool.recorder.other_frames += 1
            return
        event = message.get("event")
        if event == "pusher:connection_established":
            self.socket_id = json.loads(message["data"])["socket_id"]
            self._subscribe()
        elif event == "pusher_internal:subscription_succeeded":
            self.state = _SUBSCRIBED
            self.subscribed_at_ns = time.time_ns()
            if not self.subscribed.done():
                self.subscribed.set_result(None)
            self.pool.resubscribed(self)
        elif event == "pusher:ping":
            transport.write(masked_frame(_TEXT, b'{"event":"pusher:pong","data":{}}'))
        elif event in ("pusher:error", "pusher:subscription_error"):
            self.pool.recorder.other_frames += 1
            if self.state != _SUBSCRIBED:
                self._fail(f"{event}: {message.get('data')}")
        else:
            self.pool.recorder.other_frames += 1

    def _subscribe(self) -> None:
        assert self.transport is not None
        channel = self.spec.channel
        data: dict[str, str] = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            data["auth"] = auth_token(self.pool.app_key, self.pool.app_secret, f"{self.socket_id}:{channel}")
        message = json.dumps({"event": "pusher:subscribe", "data": data}, separators=(",", ":"))
        self.state = _SUBSCRIBING
        self.transport.write(masked_frame(_TEXT, message.encode()))

    def _fail(self, why: str) -> None:
        self.error = why
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(why))
            self.subscribed.exception()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close without reconnecting."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(_CLOSE, (1000).to_bytes(2, "big")))
            self.transport.close()


class SubscriberPool:
    """This process's subscribers: connects them, counts them, reconnects them, holds the recorder."""

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        *,
        reconnect: bool = False,
        deflate: bool = False,
        track_sequences: bool = False,
    ) -> None:
        """``track_sequences``: every subscriber keeps the sequence numbers it received (see ``sequence_report``)."""
        self.app_key = app_key
        self.app_secret = app_secret
        self.reconnect = reconnect
        # What browsers offer; the server answers with no context takeover either way.
        self.offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
        self.bytes_received = 0
        self.recorder = Recorder()
        self.live: set[Subscriber] = set()
        self.subscribed_count = 0
        self.resubscribe_times_ns: list[int] = []
        self.lost_count = 0
        self.connect_failures = 0
        self.errors: list[str] = []
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.track_sequences = track_sequences
        self.tracked: list[Subscriber] = []
        self.first_seen_ns: dict[int, int] = {}

    @property
    def closing(self) -> bool:
        """True once ``close_all`` began: connections ending now were closed by us."""
        return self._closing

    def sequence_report(self) -> dict[str, object]:
        """Per tracked subscriber: its channel, the sequence numbers it got in arrival order, whether it dropped;
        and when each number was first seen by any subscriber of this process."""
        return {
            "subscribers": [(sub.spec.channel, sub.sequences or [], sub.dropped) for sub in self.tracked],
            "first_seen_ns": dict(self.first_seen_ns),
        }

    async def connect(self, spec: ClientSpec, url_index: int = 0, limit_s: float = 30.0) -> Subscriber:
        """Open one subscriber and wait until its channel subscription succeeded."""
        loop = asyncio.get_running_loop()
        host, port = spec.urls[url_index]
        holder: list[Subscriber] = []

        def factory() -> Subscriber:
            sub = Subscriber(self, spec, url_index)
            holder.append(sub)
            return sub

        try:
            async with asyncio.timeout(limit_s):
                await loop.create_connection(factory, host, port)
                sub = holder[0]
                self.live.add(sub)
                await sub.subscribed
                if self.track_sequences:
                    self.tracked.append(sub)
        except BaseException:
            if holder and holder[0].transport is not None:
                holder[0].transport.abort()
            raise
        return sub

    async def connect_many(self, specs: Sequence[ClientSpec], concurrency: int, limit_s: float = 60.0) -> int:
        """Connect every spec with at most ``concurrency`` handshakes in flight; return how many failed."""
        semaphore = asyncio.Semaphore(concurrency)
        failures = 0

        async def one(spec: ClientSpec) -> None:
            nonlocal failures
            async with semaphore:
                for attempt in range(3):
                    try:
                        await self.connect(spec, 0, limit_s)
                        return
                    except (OSError, TimeoutError, ConnectionError) as exc:
                        if attempt == 2:
                            failures += 1
                            if len(self.errors) < 20:
                                self.errors.append(f"{type(exc).__name__}: {exc}")
                        else:
                            await asyncio.sleep(0.2 * (attempt + 1))

        await asyncio.gather(*(one(spec) for spec in specs))
        self.connect_failures += failures
        return failures

    def resubscribed(self, sub: Subscriber) -> None:
        """Called by a subscriber each time its subscription succeeds."""
        self.subscribed_count += 1
        if self.reconnect:
            self.resubscribe_times_ns.append(sub.subscribed_at_ns)

    def lost(self, sub: Subscriber, was_subscribed: bool) -> None:
        """Called by a subscriber whose connection ended; reconnects it when the pool does that."""
        self.live.discard(sub)
        if was_subscribed:
            self.subscribed_count -= 1
        if self._closing:
            return
        self.lost_count += 1
        if self.reconnect and was_subscribed:
            task = asyncio.get_running_loop().create_task(self._reconnect(sub.spec, sub.url_index))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reconnect(self, spec: ClientSpec, failed_index: int) -> None:
        """Like pusher-js: try again at once on the next node, then back off a little between attempts."""
        index = failed_index
        delay = 0.0
        while not self._closing:
            index = (index + 1) % len(spec.urls)
            try:
                await self.connect(spec, index, limit_s=30.0)
                return
            except (OSError, TimeoutError, ConnectionError):
                await asyncio.sleep(delay)
                delay = min(1.0, delay + 0.1)

    async def close_all(self, limit_s: float = 10.0) -> None:
        """Close every connection (no reconnects) and wait for them to go."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for sub in list(self.live):
            sub.close()
        deadline = time.monotonic() + limit_s
        # Polling: one Event per socket would cost memory on every connection for the sake of shutdown.
        while self.live and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for sub in list(self.live):
            if sub.transport is not None:
                with contextlib.suppress(Exception):
                    sub.transport.abort()
