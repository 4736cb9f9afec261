"""The debug console's live stream: ``GET /api/apps/{app_id}/stream``, Server-Sent Events.

A stream attaches to the node's tap (hub/tap.py), which carries the app's events from every node of the
cluster. It keeps to the configured rate: events past the per-second budget, or past what a slow
browser has not read yet, are not queued but counted, and the count goes out as a ``dropped`` event
at most once a second, so a flood shows as "N events not shown" and never slows anything down.

Events: ``hello`` (node id, rate) once, ``events`` (a JSON array of tapped events) as they come,
``dropped`` (``{"count": n}``, not shown since the last one), and a comment line as keep-alive. The
query's ``channel`` (a prefix) and ``event`` (a name, or a prefix ending in ``*``) filter before the
budget, so a filtered stream shows everything it matches up to the rate.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from aiohttp import web

from hub.admin.server import ADMIN_CONTEXT, AdminError
from hub.tap import Tap, TapEvent

KEEPALIVE_SECONDS = 10.0
CHECK_SECONDS = 0.5
DROPPED_EVERY_SECONDS = 1.0


class EventFilter:
    """Which tapped events a stream shows: by channel prefix and by event name (``*`` suffix: prefix)."""

    def __init__(self, channel: str = "", event: str = "") -> None:
        self.channel = channel
        self.event = event

    def __call__(self, tapped: TapEvent) -> bool:
        if self.channel and not str(tapped.get("channel") or "").startswith(self.channel):
            return False
        if self.event:
            name = str(tapped.get("event") or "")
            if self.event.endswith("*"):
                return name.startswith(self.event[:-1])
            return name == self.event
        return True


class ConsoleStream:
    """One open stream: the filter, a per-second budget and a bounded queue of what is to be written."""

    def __init__(self, rate: int, matches: EventFilter, clock: Any = time.monotonic) -> None:
        self.rate = rate
        self._matches = matches
        self._clock = clock
        self._queue: deque[TapEvent] = deque()
        # A token bucket rather than fixed seconds: each node's tap sends its budget in bursts at the start
        # of its own second, and two unaligned fixed windows in a row let through less than the rate.
        self._tokens = float(rate)
        self._refilled = clock()
        self.not_shown = 0
        self.shown = 0
        self._wake = asyncio.Event()

    def __call__(self, events: list[TapEvent], dropped_at_source: int) -> None:
        """The tap's sink: take what fits, count the rest."""
        self.not_shown += dropped_at_source
        now = self._clock()
        self._tokens = min(float(self.rate), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        for event in events:
            if not self._matches(event):
                continue
            # The queue bound stops a browser that does not read from costing memory.
            if self._tokens < 1.0 or len(self._queue) >= self.rate:
                self.not_shown += 1
                continue
            self._tokens -= 1.0
            self._queue.append(event)
        if self._queue or self.not_shown:
            self._wake.set()

    async def next(self, wait: float) -> list[TapEvent]:
        """What is queued, after waiting up to ``wait`` seconds for something."""
        if not self._queue:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                return []
        events = list(self._queue)
        self._queue.clear()
        self.shown += len(events)
        return events


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream(request: web.Request) -> web.StreamResponse:
    """Stream the app's tapped events until the browser goes away."""
    ctx = request.app[ADMIN_CONTEXT]
    app_id = request.match_info["app_id"]
    if ctx.apps.by_id(app_id) is None:
        raise AdminError(404, f"The app {app_id} could not be found.")
    tap: Tap | None = ctx.tap
    if tap is None:
        raise AdminError(503, "This node has no event tap.")
    matches = EventFilter(request.query.get("channel", ""), request.query.get("event", ""))
    console = ConsoleStream(tap.rate, matches)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await tap.attach(app_id, console)
    try:
        await response.write(_sse("hello", {"node": tap.node_id, "rate": tap.rate, "app_id": app_id}))
        last_dropped = last_write = time.monotonic()
        # Waits are short so a browser that went away is noticed within a second (aiohttp does not cancel
        # the handler): until then this node keeps announcing that someone watches.
        while request.transport is not None and not request.transport.is_closing():
            events = await console.next(CHECK_SECONDS)
            now = time.monotonic()
            if events:
                await response.write(_sse("events", events))
                last_write = now
            if console.not_shown and now - last_dropped >= DROPPED_EVERY_SECONDS:
                count, console.not_shown = console.not_shown, 0
                last_dropped = last_write = now
                await response.write(_sse("dropped", {"count": count}))
            elif now - last_write >= KEEPALIVE_SECONDS:
                last_write = now
                await response.write(b": keep-alive\n\n")
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        tap.detach(app_id, console)
    return response
