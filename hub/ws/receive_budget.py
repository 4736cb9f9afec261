"""How many bytes a socket may send per second: a token bucket that answers with a wait, not an error.

A client sending maximum-size frames as fast as it can is throttled by making its read loop wait:
aiohttp then stops reading the socket once its buffer fills, so TCP itself slows the client down and
the node spends no CPU on frames it has not read. A well-behaved client never notices: one frame of
the maximum size always fits, and so does a resubscribe of every channel after a reconnect.
"""

from __future__ import annotations

import asyncio
import time

from hub.config import Settings
from hub.metrics import Metrics


class ReceiveBudget:
    """Bytes per second with a burst of ``burst`` bytes; ``rate`` <= 0 means unlimited."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def spend(self, size: int, now: float) -> float:
        """Take ``size`` bytes; return how long the reader should wait before reading on (0 if none)."""
        if self._rate <= 0:
            return 0.0
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= size
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._rate

    async def throttle(self, size: int, metrics: Metrics) -> None:
        """Spend ``size`` bytes and wait out any deficit (counted as a ``client_bytes`` refusal)."""
        wait = self.spend(size, time.monotonic())
        if wait > 0:
            metrics.limit_refusals.labels("client_bytes").inc()
            await asyncio.sleep(wait)


def receive_budget(settings: Settings) -> ReceiveBudget:
    """A socket's budget: ``--max-client-kb-per-second``, with a burst of two seconds or one largest frame."""
    rate = settings.max_client_kb_per_second * 1024
    return ReceiveBudget(rate, max(2 * rate, settings.max_message_kb * 1024), time.monotonic())
