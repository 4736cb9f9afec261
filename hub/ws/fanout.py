"""Delivering broker messages to local sockets: the hot path.

One frame is built per message per node and its bytes written to every subscriber's transport; no
JSON encoding and no await per subscriber. Messages that arrive in the same event-loop turn (one read
from Redis often carries many) are written to a socket with one ``send()``: consecutive messages of a
channel are joined once into one buffer, which every subscriber gets as is. Nothing is allocated per
socket, which keeps CPython's full garbage collections out of the fan-out (see benchmarks/README.md:
this batching lifted the 2-node ramp ceiling; a per-socket list made broadcast p99 worse by 5x).
Sockets that negotiated permessage-deflate get a second buffer, compressed once for all of them and only
when one of them is in the channel. Guarded by the broadcast, ramp and compression benchmarks.
"""

from __future__ import annotations

import asyncio
import time

from hub.broker.envelope import Envelope
from hub.metrics import Metrics
from hub.protocol.messages import event_frame
from hub.ws.deflate import Deflater
from hub.ws.frames import deflated_text_frame, text_frame
from hub.ws.local_channels import LocalChannels


class Fanout:
    """Writes EVENT envelopes to their channel's local sockets, skipping each one's excluded socket."""

    def __init__(self, local: LocalChannels, metrics: Metrics, deflater: Deflater | None = None) -> None:
        self._local = local
        self._metrics = metrics
        self._deflater = deflater
        self._pending: list[Envelope] = []

    def deliver(self, envelope: Envelope) -> None:
        """Queue the event for this event-loop turn's fan-out."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(envelope)

    def flush(self) -> None:
        """Write every queued event, in arrival order, one run of same-channel events at a time."""
        pending, self._pending = self._pending, []
        start, count = 0, len(pending)
        while start < count:
            first = pending[start]
            end = start + 1
            while end < count and pending[end].channel == first.channel and pending[end].app_id == first.app_id:
                end += 1
            self._write_run(pending[start:end])
            start = end

    def _write_run(self, run: list[Envelope]) -> None:
        metrics = self._metrics
        now = time.time()
        for envelope in run:
            if envelope.published_at:
                metrics.pubsub_lag_seconds.observe(max(0.0, now - envelope.published_at))
        first = run[0]
        subscribers = self._local.subscribers(first.app_id, first.channel)
        if not subscribers:
            return
        started = time.perf_counter()
        payloads = [event_frame(e.event, e.channel, e.data, e.user_id).encode() for e in run]
        frames = [text_frame(p) for p in payloads]
        joined = frames[0] if len(frames) == 1 else b"".join(frames)
        excluded = {e.except_socket for e in run if e.except_socket is not None}
        deflated: list[bytes] | None = None
        deflated_joined = b""
        deflated_receivers = 0
        for socket_id, conn in subscribers.items():
            if conn.deflate:
                if deflated is None:
                    deflated = self._deflate(payloads, frames)
                    deflated_joined = deflated[0] if len(deflated) == 1 else b"".join(deflated)
                deflated_receivers += 1
                if socket_id not in excluded:
                    conn.write(deflated_joined)
                else:
                    conn.write(b"".join(f for f, e in zip(deflated, run, strict=True) if e.except_socket != socket_id))
            elif socket_id not in excluded:
                conn.write(joined)
            else:
                # Rare (a client event's sender, a trigger's socket_id): only these sockets get their own buffer.
                conn.write(b"".join(f for f, e in zip(frames, run, strict=True) if e.except_socket != socket_id))
        elapsed = time.perf_counter() - started
        sent = sent_bytes = 0
        plain_receivers = len(subscribers) - deflated_receivers
        for index, envelope in enumerate(run):
            plain, compressed = plain_receivers, deflated_receivers
            skipped = subscribers.get(envelope.except_socket) if envelope.except_socket is not None else None
            if skipped is not None:
                if skipped.deflate:
                    compressed -= 1
                else:
                    plain -= 1
            sent += plain + compressed
            sent_bytes += plain * len(frames[index])
            if deflated is not None:
                sent_bytes += compressed * len(deflated[index])
            metrics.fanout_seconds.observe(elapsed)
        app_id = first.app_id
        metrics.deliveries.labels(app_id).inc(sent)
        metrics.ws_messages_sent.labels(app_id).inc(sent)
        metrics.ws_sent_bytes.labels(app_id).inc(sent_bytes)

    def _deflate(self, payloads: list[bytes], frames: list[bytes]) -> list[bytes]:
        """Each event's frame for deflate sockets: compressed once here, or the plain frame when small."""
        deflater = self._deflater
        assert deflater is not None  # a socket negotiates deflate only when the node offers it
        return [
            deflated_text_frame(deflater.compress(p)) if len(p) >= deflater.min_bytes else f
            for p, f in zip(payloads, frames, strict=True)
        ]
