"""Latency summaries from the buckets a Prometheus histogram gained between two scrapes.

Quantiles follow Prometheus' `histogram_quantile`: linear interpolation inside the bucket that
holds the rank, 0 as the lower edge of the first bucket, and the highest finite bound when the
rank falls in the `+Inf` bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.checkpoint import LatencySummary

QUANTILES = (0.5, 0.9, 0.99)


@dataclass(slots=True)
class Histogram:
    """Cumulative bucket counts by upper bound (ascending, `+Inf` last), with `_count`/`_sum`."""

    buckets: list[tuple[float, float]]
    count: float
    sum: float


def delta(before: Histogram, after: Histogram) -> Histogram | None:
    """Return what `after` gained over `before`, or None when their bucket bounds differ."""
    if [b for b, _ in before.buckets] != [b for b, _ in after.buckets]:
        return None
    buckets = [(b, a - p) for (b, a), (_, p) in zip(after.buckets, before.buckets, strict=True)]
    return Histogram(buckets=buckets, count=after.count - before.count, sum=after.sum - before.sum)


def summarize(hist: Histogram) -> LatencySummary | None:
    """Return count, mean and percentiles of `hist`, or None when it holds no observation."""
    buckets = _monotonic(hist.buckets)
    if len(buckets) < 2 or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    p50, p90, p99 = (quantile(q, buckets) for q in QUANTILES)
    return LatencySummary(
        count=round(total), mean_s=max(hist.sum, 0.0) / total, p50_s=p50, p90_s=p90, p99_s=p99
    )


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Return the q-quantile of cumulative `buckets`: at least one finite bound, then `+Inf`
    holding a positive total."""
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for i, (upper, cumulative) in enumerate(buckets[:-1]):
        if cumulative >= rank:
            if i == 0 and upper <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return buckets[-2][0]


def _monotonic(buckets: list[tuple[float, float]]) -> list[tuple[float, float]]:
    # Float noise in the differences of large counters can make a bucket dip below the one
    # before it; Prometheus repairs that the same way.
    fixed: list[tuple[float, float]] = []
    highest = 0.0
    for upper, cumulative in buckets:
        highest = max(highest, cumulative)
        fixed.append((upper, highest))
    return fixed
