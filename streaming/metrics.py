"""Runtime metrics kept as plain numbers; exported by the server (Prometheus format).

Nothing here runs per chunk beyond an integer increment: rates are derived by the scraper.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Histogram", "RuntimeMetrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


@dataclass
class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics)."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class RuntimeMetrics:
    generations: Counter[str] = field(default_factory=Counter)  # by outcome
    tool_calls: Counter[str] = field(default_factory=Counter)  # by outcome: ok, error
    events: int = 0  # events of finished generations (running ones are added at scrape)
    chunks: int = 0  # chunks of finished generations
    store_errors: int = 0
    time_to_first_delta: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))
