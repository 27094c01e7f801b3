"""What a load benchmark measured: how many requests, in how much wall time, and each one's latency."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Measured:
    """Requests made so far: how many, in how many seconds of wall time, each one's latency in ms, and how many
    were not answered as expected."""

    count: int = 0
    seconds: float = 0.0
    latency: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.count / self.seconds

    def p(self, percent: float) -> float:
        """The ``percent`` percentile of the latencies (nearest rank)."""
        ordered = sorted(self.latency)
        return ordered[min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))]
