"""Console streams held open during a scenario, as a browser on the debug console would hold them.

Each stream reads ``GET /api/apps/{id}/stream`` (Server-Sent Events) from a node's admin port and counts
the events it was shown and the ones it was told were not shown, so a run reports both the cost of an
open console (by comparing with a run without) and how much the stream carried before it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import aiohttp

CONSOLE_TOKEN = "benchmark-console-token-0123456789"


@dataclass
class StreamCounts:
    """What the streams received so far."""

    shown: int = 0
    not_shown: int = 0


class ConsoleWatch:
    """``count`` streams of app ``app_id`` on the admin port ``port``; counts shared by all of them."""

    def __init__(self, host: str, port: int, app_id: str, count: int = 1) -> None:
        self._url = f"http://{host}:{port}/api/apps/{app_id}/stream"
        self._count = count
        self.counts = StreamCounts()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._opened = asyncio.Event()
        self._open = 0

    async def start(self) -> None:
        """Open the streams and wait until each said hello."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        self._tasks = [asyncio.create_task(self._read()) for _ in range(self._count)]
        await asyncio.wait_for(self._opened.wait(), 30)

    async def _read(self) -> None:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
        async with self._session.get(self._url, headers=headers) as response:
            response.raise_for_status()
            name = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if name == "hello":
                        self._open += 1
                        if self._open == self._count:
                            self._opened.set()
                    elif name == "events":
                        self.counts.shown += len(data)
                    elif name == "dropped":
                        self.counts.not_shown += int(data["count"])

    def take(self) -> StreamCounts:
        """The counts since the last call."""
        counts, self.counts = self.counts, StreamCounts()
        return counts

    async def stop(self) -> None:
        """Close the streams."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, OSError):
                await task
        if self._session is not None:
            await self._session.close()
