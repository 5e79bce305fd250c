"""Compare two MetricsReadings: rates, latency percentiles, forward progress, restarts.

All of it is about the interval between the previous scrape and this one. A restart (a counter
went backwards, or the API server's start time changed) leaves rates and latency empty for
that interval: the counters started again from zero, so a difference would be meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.checkpoint import LatencySummary, Rates
from agent.collectors.histogram import delta, summarize
from agent.collectors.vllm_metrics import MetricsReading

PROGRESS_TOTALS = ("generation_tokens", "prompt_tokens", "engine_steps")


@dataclass(kw_only=True, slots=True)
class Interval:
    restarted: bool = False
    rates: Rates = field(default_factory=Rates)
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    forward_progress: bool | None = None


def compare(before: MetricsReading | None, after: MetricsReading, interval_s: float) -> Interval:
    """Return what happened between `before` and `after`, `interval_s` seconds apart."""
    if before is None or interval_s <= 0:
        return Interval(rates=Rates(**_gauge_rates(after)))
    if is_restart(before, after):
        return Interval(restarted=True)
    return Interval(
        rates=_rates(before, after, interval_s),
        latency=_latency(before, after),
        forward_progress=_forward_progress(before, after),
    )


def is_restart(before: MetricsReading, after: MetricsReading) -> bool:
    """Return True when vLLM restarted between the two readings."""
    start_before = before.api_server.start_time if before.api_server else None
    start_after = after.api_server.start_time if after.api_server else None
    if start_before is not None and start_after is not None and start_before != start_after:
        return True
    if any(after.totals[k] < v for k, v in before.totals.items() if k in after.totals):
        return True
    return any(
        after.histograms[k].count < h.count
        for k, h in before.histograms.items()
        if k in after.histograms
    )


def _rates(before: MetricsReading, after: MetricsReading, interval_s: float) -> Rates:
    def per_s(*keys: str) -> float | None:
        if not all(k in before.totals and k in after.totals for k in keys):
            return None
        return sum(after.totals[k] - before.totals[k] for k in keys) / interval_s

    rates = Rates(
        prompt_tokens_per_s=per_s("prompt_tokens"),
        generation_tokens_per_s=per_s("generation_tokens"),
        preemptions_per_s=per_s("preemptions"),
        requests_finished_per_s=per_s("requests_finished"),
        requests_failed_per_s=_failed_per_s(before, after, interval_s),
        engine_steps_per_s=per_s("engine_steps"),
        http_4xx_per_s=per_s("http_requests_4xx"),
        http_5xx_per_s=per_s("http_requests_5xx"),
        prefix_cache_hit_pct=_prefix_hit_pct(before, after),
    )
    for key, value in _gauge_rates(after).items():
        if getattr(rates, key) is None:
            setattr(rates, key, value)
    return rates


def _failed_per_s(before: MetricsReading, after: MetricsReading, interval_s: float) -> float | None:
    # Older vLLM has no "error" reason; aborts alone are still failures worth a rate.
    keys = [k for k in ("requests_abort", "requests_error") if k in before.totals]
    if not keys or not all(k in after.totals for k in keys):
        return None
    return sum(after.totals[k] - before.totals[k] for k in keys) / interval_s


def _prefix_hit_pct(before: MetricsReading, after: MetricsReading) -> float | None:
    keys = ("prefix_cache_queries", "prefix_cache_hits")
    if not all(k in before.totals and k in after.totals for k in keys):
        return None
    queries = after.totals["prefix_cache_queries"] - before.totals["prefix_cache_queries"]
    hits = after.totals["prefix_cache_hits"] - before.totals["prefix_cache_hits"]
    if queries <= 0:
        return None
    return min(100.0, 100.0 * hits / queries)


def _gauge_rates(after: MetricsReading) -> dict[str, float]:
    # V0's averaged throughput gauges stand in only where the token counters are absent.
    fallback = {
        "prompt_tokens_per_s": "prompt_tokens",
        "generation_tokens_per_s": "generation_tokens",
    }
    return {
        rate: after.throughput_gauges[key]
        for rate, key in fallback.items()
        if key in after.throughput_gauges and key not in after.totals
    }


def _latency(before: MetricsReading, after: MetricsReading) -> dict[str, LatencySummary]:
    latency: dict[str, LatencySummary] = {}
    for key, hist in after.histograms.items():
        gained = delta(before.histograms[key], hist) if key in before.histograms else None
        summary = summarize(gained) if gained is not None else None
        if summary is not None:
            latency[key] = summary
    return latency


def _forward_progress(before: MetricsReading, after: MetricsReading) -> bool | None:
    keys = [k for k in PROGRESS_TOTALS if k in before.totals and k in after.totals]
    if not keys:
        return None
    if any(after.totals[k] > before.totals[k] for k in keys):
        return True
    # Idle is not a stall: with nothing running there is no progress to expect.
    return False if (after.requests_running or 0) > 0 else None
