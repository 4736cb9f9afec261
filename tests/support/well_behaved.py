"""A well-behaved client pair, to measure what an abusive one costs the others.

One WebSocket subscriber and one backend publishing a signed event every ``interval`` seconds over
the HTTP API, both from 127.0.0.1; latency is from just before the publish to the subscriber's read.
An abuser (tests/support/abusers.py) connects from another loopback address (127.0.0.2), so per-address
limits tell the two apart.

    async with WellBehaved(port) as good:
        await good.measure(3.0)             # a baseline
        with good.window() as during:       # latencies recorded while the abuse runs
            await abuse()
        during.p99, good.lost, good.refused
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import aiohttp

from tests.support.ports import LOOPBACK
from tests.support.request_signing import signed_params
from tests.support.topology import APP_ID, APP_KEY


@dataclass
class Window:
    """Latencies (seconds) of the events published while the window was open."""

    latencies: list[float] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, by rank."""
        ordered = sorted(self.latencies)
        assert ordered, "no event was delivered in the window"
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        """Median latency."""
        return self.quantile(0.5)

    @property
    def p99(self) -> float:
        """99th percentile latency."""
        return self.quantile(0.99)


class WellBehaved:
    """Subscriber + publisher on ``port`` (one `hub serve`), measuring delivery latency."""

    def __init__(self, port: int, *, channel: str = "well-behaved", interval: float = 0.02) -> None:
        self.port = port
        self.channel = channel
        self.interval = interval
        self.published: dict[int, float] = {}
        self.received: dict[int, float] = {}
        self.refused: list[int] = []
        self._windows: list[tuple[Window, float, float]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        """Connect, subscribe, start publishing."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._ws = await self._session.ws_connect(f"ws://{LOOPBACK}:{self.port}/app/{APP_KEY}?protocol=7")
        await self._ws.receive_json(timeout=5)  # connection_established
        await self._ws.send_json({"event": "pusher:subscribe", "data": {"channel": self.channel}})
        while (await self._ws.receive_json(timeout=5)).get("event") != "pusher_internal:subscription_succeeded":
            pass
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._publish())]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop publishing, wait for the last events, disconnect."""
        self._tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tasks[1]
        await self.settle()
        self._tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tasks[0]
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def settle(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109  -- seconds, like the rest
        """Wait until every event answered 200 so far has arrived (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while self.lost and time.monotonic() < deadline:  # noqa: ASYNC110  -- the reader task fills it
            await asyncio.sleep(0.05)

    @property
    def lost(self) -> list[int]:
        """Events answered 200 that the subscriber has not received."""
        return sorted(set(self.published) - set(self.received))

    @contextlib.contextmanager
    def window(self) -> Iterator[Window]:
        """Record the latency of every event published while the block runs."""
        window = Window()
        entry = (window, time.time(), float("inf"))
        self._windows.append(entry)
        try:
            yield window
        finally:
            self._windows[self._windows.index(entry)] = (window, entry[1], time.time())

    async def measure(self, seconds: float) -> Window:
        """A window of ``seconds`` of undisturbed traffic."""
        with self.window() as window:
            await asyncio.sleep(seconds)
        await asyncio.sleep(0.5)
        return window

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame.get("event") != "tick":
                continue
            now = time.time()
            tick = json.loads(frame["data"])
            self.received[tick["n"]] = now
            sent = tick["t"]
            for window, opened, closed in self._windows:
                if opened <= sent <= closed:
                    window.latencies.append(now - sent)

    async def _publish(self) -> None:
        assert self._session is not None
        path = f"/apps/{APP_ID}/events"
        n = 0
        while True:
            sent = time.time()
            body = json.dumps(
                {"name": "tick", "channel": self.channel, "data": json.dumps({"n": n, "t": sent})}
            ).encode()
            params = signed_params("POST", path, body)
            try:
                async with self._session.post(
                    f"http://{LOOPBACK}:{self.port}{path}",
                    params=params,
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    if response.status == 200:
                        self.published[n] = sent
                    else:
                        self.refused.append(response.status)
            except aiohttp.ClientError:
                self.refused.append(0)
            n += 1
            await asyncio.sleep(max(0.0, self.interval - (time.time() - sent)))
