"""Delivering broker messages to local sockets: the hot path.

One frame is built per message per node and its bytes written to every subscriber's transport; no
JSON encoding and no await per subscriber. Guarded by the broadcast and ramp benchmarks in benchmarks/.
"""

from __future__ import annotations

import time

from hub.broker.envelope import Envelope
from hub.metrics import Metrics
from hub.protocol.messages import event_frame
from hub.ws.frames import text_frame
from hub.ws.local_channels import LocalChannels


class Fanout:
    """Writes EVENT envelopes to the channel's local sockets, skipping the excluded one."""

    def __init__(self, local: LocalChannels, metrics: Metrics) -> None:
        self._local = local
        self._metrics = metrics

    def deliver(self, envelope: Envelope) -> int:
        """Write the event to every local subscriber; return how many sockets it was written to."""
        metrics = self._metrics
        if envelope.published_at:
            metrics.pubsub_lag_seconds.observe(max(0.0, time.time() - envelope.published_at))
        subscribers = self._local.subscribers(envelope.app_id, envelope.channel)
        if not subscribers:
            return 0
        started = time.perf_counter()
        payload = event_frame(envelope.event, envelope.channel, envelope.data, envelope.user_id).encode()
        frame = text_frame(payload)
        skip = envelope.except_socket
        sent = 0
        for socket_id, conn in subscribers.items():
            if socket_id != skip:
                conn.write(frame)
                sent += 1
        metrics.fanout_seconds.observe(time.perf_counter() - started)
        app_id = envelope.app_id
        metrics.deliveries.labels(app_id).inc(sent)
        metrics.ws_messages_sent.labels(app_id).inc(sent)
        metrics.ws_sent_bytes.labels(app_id).inc(sent * len(frame))
        return sent
