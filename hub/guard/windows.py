"""Per-key counters over one-second windows, in memory: cheap enough to run on every connection."""

from __future__ import annotations


class PerSecond:
    """Counts events per key in the current one-second window; the whole map resets with the window.

    Resetting everything at once keeps memory bounded by the keys seen in one second (a flood from
    many addresses cannot grow it past that), at the price of a window that is not sliding.
    """

    def __init__(self, limit: int) -> None:
        """``limit`` events per key per second; a negative limit never refuses."""
        self.limit = limit
        self._window = 0.0
        self._counts: dict[str, int] = {}

    def _roll(self, now: float) -> None:
        if now - self._window >= 1.0:
            self._window = now
            self._counts.clear()

    def take(self, key: str, now: float) -> bool:
        """Count one event for ``key``; False when that makes more than ``limit`` this second."""
        if self.limit < 0:
            return True
        self._roll(now)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count <= self.limit

    def add(self, key: str, now: float) -> None:
        """Count one event for ``key`` without asking."""
        if self.limit < 0:
            return
        self._roll(now)
        self._counts[key] = self._counts.get(key, 0) + 1

    def exceeded(self, key: str, now: float) -> bool:
        """Whether ``key`` is already over the limit this second."""
        if self.limit < 0:
            return False
        self._roll(now)
        return self._counts.get(key, 0) > self.limit
