"""A bucketed histogram that takes many equal observations at once.

The engine produces thousands of token latencies per second per host; `observe(v, n)` files
them in one call, so a simulated step stays cheap.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence

from prometheus_client.utils import floatToGoString

_go_float: Callable[[float], str] = floatToGoString  # prometheus_client's number format


class Histogram:
    __slots__ = ("bounds", "counts", "le_labels", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.le_labels = (*(_go_float(b) for b in self.bounds), "+Inf")
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is (largest bound, +Inf)
        self.sum = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        # Prometheus buckets are "less than or equal": bisect_left puts v == bound in it.
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Return (le, cumulative count) pairs ending with +Inf, as exposition wants them."""
        total = 0
        pairs = []
        for label, n in zip(self.le_labels, self.counts, strict=True):
            total += n
            pairs.append((label, float(total)))
        return pairs

    def quantile(self, q: float) -> float:
        """Return the `q` quantile by linear interpolation inside the bucket, as PromQL does."""
        total = self.count
        if total == 0:
            return 0.0
        rank = q * total
        seen = 0
        for i, n in enumerate(self.counts):
            if seen + n >= rank and n:
                if i == len(self.bounds):
                    return self.bounds[-1]
                lower = self.bounds[i - 1] if i else 0.0
                return lower + (self.bounds[i] - lower) * (rank - seen) / n
            seen += n
        return self.bounds[-1]


def one_two_five(limit: int) -> list[float]:
    """Return vLLM's 1-2-5 token buckets up to `limit` (max_model_len): 1, 2, 5, 10, 20, ..."""
    bounds: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > limit:
                return bounds
            bounds.append(float(value))
        exponent += 1
