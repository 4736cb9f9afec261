"""Small cluster-wide primitives: expiring tokens, once-per-window claims and per-second counters.

They let any node make a decision exactly once for the cluster (hold a webhook for 3 s and cancel it,
send one subscription count per second, count an app's publishes per second) without asking the
other nodes. Memory implementation here; Redis in ``redis_coordination``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable


class Coordination(ABC):
    """Contract: each operation is atomic across every node sharing the store."""

    @abstractmethod
    async def put(self, key: str, token: str, ttl: float) -> None:
        """Store ``token`` under ``key`` for ``ttl`` seconds (replacing any other)."""

    @abstractmethod
    async def take(self, key: str, token: str | None = None) -> bool:
        """Delete ``key`` if present (and holding ``token`` when given); True when this call deleted it."""

    @abstractmethod
    async def claim(self, key: str, ttl: float) -> bool:
        """True for the first caller in ``ttl`` seconds, False for everyone else until it expires."""

    @abstractmethod
    async def count(self, key: str, amount: int, window: float) -> int:
        """Add ``amount`` to a counter that resets ``window`` seconds after its first use; return the total."""


class MemoryCoordination(Coordination):
    """Coordination for one process (and for tests that share one instance between nodes)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}
        self._counters: dict[str, tuple[int, float]] = {}

    def _live(self, key: str) -> str | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._values[key]
            return None
        return entry[0]

    async def put(self, key: str, token: str, ttl: float) -> None:
        self._values[key] = (token, self._clock() + ttl)

    async def take(self, key: str, token: str | None = None) -> bool:
        value = self._live(key)
        if value is None or (token is not None and value != token):
            return False
        del self._values[key]
        return True

    async def claim(self, key: str, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        self._values[key] = ("1", self._clock() + ttl)
        return True

    async def count(self, key: str, amount: int, window: float) -> int:
        now = self._clock()
        total, expires = self._counters.get(key, (0, 0.0))
        if expires <= now:
            total, expires = 0, now + window
        total += amount
        self._counters[key] = (total, expires)
        return total
