"""How many bytes a socket may send per second: a token bucket that answers with a wait, not an error.

A client sending maximum-size frames as fast as it can is throttled by pausing its socket's reads for
that wait: TCP itself slows the client down, and the node holds no more of its frames in memory than
it has read. A well-behaved client never notices: one frame of the maximum size always fits, and so
does a resubscribe of every channel after a reconnect.
"""

from __future__ import annotations

import time

from hub.config import Settings


class ReceiveBudget:
    """Bytes per second with a burst of ``burst`` bytes; ``rate`` <= 0 means unlimited."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens", "paused")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now
        self.paused = False  # the socket's reads are paused until the budget refills

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


def throttled(budget: ReceiveBudget | None) -> bool:
    """Whether a socket's reads are paused by its budget (and must stay so)."""
    return budget is not None and budget.paused


def receive_budget(settings: Settings) -> ReceiveBudget:
    """A socket's budget: ``--max-client-kb-per-second``, with a burst of two seconds or one largest frame."""
    rate = settings.max_client_kb_per_second * 1024
    return ReceiveBudget(rate, max(2 * rate, settings.max_message_kb * 1024), time.monotonic())
