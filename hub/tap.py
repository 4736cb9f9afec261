"""The event tap behind the console's debug stream: free while nobody watches, bounded while someone does.

Call sites guard every tap with ``if tap.watching(app_id): tap.emit(app_id, kind, **fields)``.
``watching`` is one dict lookup, False unless some node of the cluster has a console stream open for
the app, so the connection, subscription, publish and webhook paths do no other work (no allocation,
no call) while nobody watches.

How a node learns that someone watches: a node with a stream open announces it on the app's control
topic (``Kind.CONSOLE_WATCH``, every WATCH_INTERVAL seconds, valid for WATCH_TTL), which every node of
every role receives. Once the announcements stop, each node forgets the app within WATCH_TTL.

While watched, a node collects what it taps and publishes it every FLUSH_SECONDS as one
``Kind.CONSOLE_EVENTS`` envelope on the app's console topic, which only nodes with a stream open
subscribe to. At most ``rate`` events per app and second leave a node; past that they are only
counted, and the count travels with the next batch so the stream can say "N events not shown".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from hub.broker.base import CONSOLE_CHANNEL, Broker, BrokerUnavailable
from hub.broker.envelope import Envelope, Kind
from hub.metrics import Metrics
from hub.protocol.messages import dumps

log = structlog.get_logger("hub.tap")

WATCH_INTERVAL = 2.0
WATCH_TTL = 6.0
FLUSH_SECONDS = 0.1
# Event data beyond this many characters is cut in the stream: the console shows, it does not archive.
MAX_DATA_CHARS = 2000

TapEvent = dict[str, Any]
TapSink = Callable[[list[TapEvent], int], None]
"""A local console stream: receives each batch of events and how many were not shown at the source."""


class Tap:
    """This node's end of the console streams: taps events, and feeds its own open streams."""

    def __init__(
        self,
        node_id: str,
        rate: int = 200,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.node_id = node_id
        self._metrics = metrics
        self.rate = rate
        self._clock = clock
        self._broker: Broker | None = None
        self._watched: dict[str, float] = {}  # app id -> when the last announcement runs out
        self._pending: dict[str, list[TapEvent]] = {}
        self._dropped: dict[str, int] = {}
        self._windows: dict[str, tuple[float, int]] = {}  # app id -> (second it counts, events in it)
        self._sinks: dict[str, set[TapSink]] = {}
        self._flush_due = False
        self._tasks: set[asyncio.Task[None]] = set()

    def attach_broker(self, broker: Broker) -> None:
        """Carry batches and announcements over ``broker`` (without one, only this node's streams see them)."""
        self._broker = broker

    # -- the call sites' side ------------------------------------------------------------------------

    def watching(self, app_id: str) -> bool:
        """Whether any console stream in the cluster watches the app: the guard of every tap."""
        return app_id in self._watched

    def emit(self, app_id: str, kind: str, **fields: Any) -> None:
        """Tap one event (call only when ``watching``); counted instead of sent past the rate."""
        now = time.time()
        second, count = self._windows.get(app_id, (0.0, 0))
        if now - second >= 1.0:
            second, count = now, 0
        if count >= self.rate:
            self._dropped[app_id] = self._dropped.get(app_id, 0) + 1
        else:
            self._windows[app_id] = (second, count + 1)
            if "data" in fields:
                fields["data"] = _shown_data(fields["data"])
            fields["kind"] = kind
            fields["time"] = now
            fields["node"] = self.node_id
            self._pending.setdefault(app_id, []).append(fields)
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        pending, self._pending = self._pending, {}
        dropped, self._dropped = self._dropped, {}
        for app_id in pending.keys() | dropped.keys():
            if self._metrics is not None and app_id in dropped:
                self._metrics.console_not_shown.labels(app_id).inc(dropped[app_id])
            data = {"events": pending.get(app_id, []), "dropped": dropped.get(app_id, 0)}
            envelope = Envelope(
                Kind.CONSOLE_EVENTS,
                app_id,
                CONSOLE_CHANNEL,
                "",
                data,
                origin_node=self.node_id,
                published_at=time.time(),
            )
            if self._broker is None:
                self.receive(envelope)
            else:
                self._spawn(self._publish(envelope))

    # -- the broker's side ---------------------------------------------------------------------------

    def receive(self, envelope: Envelope) -> None:
        """Broker handler for the console kinds: note an announcement, or feed the local streams."""
        if envelope.kind is Kind.CONSOLE_WATCH:
            ttl = envelope.data if isinstance(envelope.data, (int, float)) else WATCH_TTL
            self._note_watch(envelope.app_id, float(ttl))
        elif envelope.kind is Kind.CONSOLE_EVENTS:
            sinks = self._sinks.get(envelope.app_id)
            data = envelope.data
            if not sinks or not isinstance(data, dict):
                return
            events = [e for e in data.get("events") or () if isinstance(e, dict)]
            dropped = data.get("dropped")
            not_shown = dropped if isinstance(dropped, int) and not isinstance(dropped, bool) else 0
            for sink in list(sinks):
                sink(events, not_shown)

    def _note_watch(self, app_id: str, ttl: float) -> None:
        until = self._clock() + ttl
        if until > self._watched.get(app_id, 0.0):
            self._watched[app_id] = until

    # -- the console's side --------------------------------------------------------------------------

    async def attach(self, app_id: str, sink: TapSink) -> None:
        """Open a stream of the app's events on this node; events tapped after this returns reach ``sink``."""
        first = app_id not in self._sinks
        self._sinks.setdefault(app_id, set()).add(sink)
        if self._metrics is not None:
            self._metrics.console_streams.labels(app_id).inc()
        if first and self._broker is not None:
            await self._broker.subscribe(app_id, CONSOLE_CHANNEL)
        await self._announce(app_id)

    def detach(self, app_id: str, sink: TapSink) -> None:
        """Close a stream; the last one of an app stops this node's announcements and subscription."""
        sinks = self._sinks.get(app_id)
        if sinks is None:
            return
        if sink in sinks and self._metrics is not None:
            self._metrics.console_streams.labels(app_id).dec()
        sinks.discard(sink)
        if not sinks:
            del self._sinks[app_id]
            if self._broker is not None:
                self._broker.unsubscribe(app_id, CONSOLE_CHANNEL)

    def streams(self, app_id: str) -> int:
        """Streams of the app open on this node."""
        return len(self._sinks.get(app_id, ()))

    async def _announce(self, app_id: str) -> None:
        self._note_watch(app_id, WATCH_TTL)
        if self._broker is None:
            return
        envelope = Envelope(
            Kind.CONSOLE_WATCH, app_id, "", "", WATCH_TTL, origin_node=self.node_id, published_at=time.time()
        )
        await self._publish(envelope)

    async def run(self) -> None:
        """Announce this node's open streams and forget apps nobody announces any more (until cancelled)."""
        next_announce = 0.0
        while True:
            await asyncio.sleep(min(1.0, WATCH_INTERVAL))
            now = self._clock()
            for app_id in [a for a, until in self._watched.items() if until <= now]:
                del self._watched[app_id]
                self._windows.pop(app_id, None)
            if now >= next_announce:
                next_announce = now + WATCH_INTERVAL
                for app_id in list(self._sinks):
                    await self._announce(app_id)

    async def close(self) -> None:
        """Wait briefly for batches in flight."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()

    async def _publish(self, envelope: Envelope) -> None:
        assert self._broker is not None
        try:
            await self._broker.publish(envelope)
        except BrokerUnavailable as exc:
            # The stream shows what it can; a lost batch must never fail what was being tapped.
            log.debug("tap_publish_failed", app_id=envelope.app_id, error=str(exc))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _shown_data(data: Any) -> str:
    text = data if isinstance(data, str) else dumps(data)
    if len(text) > MAX_DATA_CHARS:
        return text[:MAX_DATA_CHARS] + "…"
    return text
