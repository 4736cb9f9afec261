"""A fixed-size latency histogram: O(1) record, mergeable across processes, exact count and max.

Buckets are 10 µs wide up to 1 s and 10 ms wide from 1 s to 100 s (anything later lands in the last
bucket), so percentiles below one second are exact to 10 µs. The arrays are allocated once; recording a
latency is two integer divisions and an index increment, cheap enough for the subscriber's per-message
path (see ``benchmarks/wsclient.py``).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

FINE_US = 10
FINE_BUCKETS = 100_000  # 10 µs x 100,000 = 1 s
COARSE_US = 10_000
COARSE_BUCKETS = 10_000  # 10 ms x 10,000 = 100 s
FINE_LIMIT_US = FINE_US * FINE_BUCKETS
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles and extremes of a histogram, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready fields."""
        return {
            "count": self.count,
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "p999_ms": round(self.p999_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
        }


class Histogram:
    """Latency counts in microseconds. Not thread-safe; one per event loop."""

    __slots__ = ("coarse", "count", "fine", "max_us", "total_us")

    def __init__(self) -> None:
        self.fine = array("Q", bytes(8 * FINE_BUCKETS))
        self.coarse = array("Q", bytes(8 * COARSE_BUCKETS))
        self.count = 0
        self.total_us = 0
        self.max_us = 0

    def record(self, latency_us: int) -> None:
        """Count one latency (negative values, from clock granularity, count as zero)."""
        if latency_us < 0:
            latency_us = 0
        if latency_us < FINE_LIMIT_US:
            self.fine[latency_us // FINE_US] += 1
        else:
            self.coarse[min(latency_us // COARSE_US, COARSE_BUCKETS - 1)] += 1
        self.count += 1
        self.total_us += latency_us
        if latency_us > self.max_us:
            self.max_us = latency_us

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts to this one."""
        for i, n in enumerate(other.fine):
            if n:
                self.fine[i] += n
        for i, n in enumerate(other.coarse):
            if n:
                self.coarse[i] += n
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    def to_sparse(self) -> dict[str, object]:
        """A compact picklable form: only the non-empty buckets."""
        return {
            "fine": {i: n for i, n in enumerate(self.fine) if n},
            "coarse": {i: n for i, n in enumerate(self.coarse) if n},
            "count": self.count,
            "total_us": self.total_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_sparse(cls, data: dict[str, object]) -> Histogram:
        """Rebuild a histogram from ``to_sparse`` output."""
        hist = cls()
        fine = data["fine"]
        coarse = data["coarse"]
        assert isinstance(fine, dict) and isinstance(coarse, dict)
        for i, n in fine.items():
            hist.fine[int(i)] = int(n)
        for i, n in coarse.items():
            hist.coarse[int(i)] = int(n)
        hist.count = int(data["count"])  # type: ignore[call-overload]
        hist.total_us = int(data["total_us"])  # type: ignore[call-overload]
        hist.max_us = int(data["max_us"])  # type: ignore[call-overload]
        return hist

    def percentile_us(self, percentile: float) -> int:
        """The latency at or below which ``percentile`` % of the samples lie (upper bucket edge, capped at max)."""
        if self.count == 0:
            return 0
        rank = max(1, -(-int(self.count * percentile * 1000) // 100_000))  # ceil(count * p / 100)
        seen = 0
        for i, n in enumerate(self.fine):
            if n:
                seen += n
                if seen >= rank:
                    return min((i + 1) * FINE_US, self.max_us)
        for i, n in enumerate(self.coarse):
            if n:
                seen += n
                if seen >= rank:
                    return min((i + 1) * COARSE_US, self.max_us)
        return self.max_us

    def summary(self) -> LatencySummary:
        """p50/p90/p99/p99.9/max/mean in milliseconds."""
        p50, p90, p99, p999 = (self.percentile_us(p) / 1000 for p in PERCENTILES)
        mean = self.total_us / self.count / 1000 if self.count else 0.0
        return LatencySummary(self.count, p50, p90, p99, p999, self.max_us / 1000, mean)
