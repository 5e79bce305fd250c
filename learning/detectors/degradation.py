"""Performance degradation: latency or throughput worse than the host's own baseline at a
similar load. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from learning.detectors.finding import (
    Finding,
)
from learning.forecast import RUN_STATES, series
from learning.robust import (
    floats,
)
from learning.window import Window

# Performance degradation
RECENT_S = 60.0
LOAD_TOLERANCE = 0.2  # log1p(running) within this (about +-20 %) is a similar load
WAITING_BIN_BASE = 5.0  # waiting counts are binned by powers of 5: 0-3, 4-23, 24-123, ...
MIN_MATCHES = 5  # history points at a similar load a comparison needs
MIN_RECENT = 3
RANK_SIGMAS = 3.0  # the recent points must rank this many standard errors above the middle,
MIN_RANK = 0.85  # and above this share of their matches: neighbouring points are correlated
# (a load swing moves them together), so the standard error alone flatters a short stretch
DEGRADED_RATIO = {"info": 1.3, "warning": 1.5, "critical": 2.5}
# metric -> True when higher is worse. Not TTFT: it holds the time a request waits in the
# queue, and a queue (more arrivals than the server takes) is load, not a slower server; it
# also lags the queue by a request's wait, so no matching on the waiting count can catch it.
# Not the prefill time either: a full KV cache preempts requests and prefills them again.
# A slower server (clocks cut, a sick GPU) stretches every decode step: ITL shows it.
PERFORMANCE_METRICS = {"itl_p99_s": True, "generation_tokens_per_s": False}
BASELINE_STATES = frozenset({"serving", "unknown"})


@dataclass(frozen=True, slots=True)
class _Comparison:
    metric: str
    ratio: float  # how many times worse than the baseline (>= 1 is worse)
    current: float
    baseline: float
    rank: float  # mean share of similar-load history the recent points are worse than
    points: int


def performance_degradation(w: Window, now: float, recent_s: float = RECENT_S) -> Finding | None:
    """Return a finding when latency or throughput is worse than this host's own history at a
    similar load.

    The recent points (the last `recent_s`) are each compared with the older serving
    points whose running count is within about 20 % and whose waiting count is in the same
    power-of-5 bin. A metric is degraded when the recent points are consistently worse than
    their matches (mean rank RANK_SIGMAS standard errors above the middle, and at least
    MIN_RANK) and the median ratio to the matched medians reaches DEGRADED_RATIO["info"].
    The worst metric is reported.
    """
    running, waiting = series(w, "requests_running"), series(w, "requests_waiting")
    states, baseline_states = _in(w.states, RUN_STATES), _in(w.states, BASELINE_STATES)
    loaded = ~np.isnan(running) & ~np.isnan(waiting)
    is_recent = (w.t >= now - recent_s) & (w.t <= now) & states & loaded
    is_history = (w.t < now - recent_s) & baseline_states & loaded
    if is_recent.sum() < MIN_RECENT or is_history.sum() < MIN_MATCHES:
        return None
    similar = _similar_load(running, waiting, is_recent, is_history)
    comparisons = [
        c
        for metric, higher_worse in PERFORMANCE_METRICS.items()
        if (c := _compare(series(w, metric), higher_worse, metric, is_recent, is_history, similar))
    ]
    if not comparisons:
        return None
    worst = max(comparisons, key=lambda c: c.ratio)
    figures = {f"{c.metric}_ratio": c.ratio for c in comparisons}
    figures |= {
        "current": worst.current,
        "baseline": worst.baseline,
        "rank": worst.rank,
        "points": float(worst.points),
    }
    return Finding(
        what="performance_degradation",
        failure_type="performance_degradation",
        severity=_degradation_severity(worst.ratio),
        summary=f"{worst.metric} {worst.ratio:.1f}x worse than this host at a similar load "
        f"({worst.current:.3g} against {worst.baseline:.3g})",
        time_to_exhaustion_s=None,
        figures=figures,
    )


def _in(states: list[str], allowed: frozenset[str]) -> np.ndarray:
    """Return which of `states` are `allowed` (without a loop when all are: the common case)."""
    if allowed.issuperset(states):
        return np.ones(len(states), dtype=bool)
    return np.array([s in allowed for s in states], dtype=bool)


def _similar_load(
    running: np.ndarray, waiting: np.ndarray, is_recent: np.ndarray, is_history: np.ndarray
) -> np.ndarray:
    """Return a (recent x history) matrix: True where the history point's load is similar."""
    run = np.log1p(np.maximum(running, 0.0))
    bins = np.floor(np.log1p(np.maximum(waiting, 0.0)) / math.log(WAITING_BIN_BASE))
    close = np.abs(run[is_recent][:, None] - run[is_history][None, :]) <= LOAD_TOLERANCE
    same_queue = bins[is_recent][:, None] == bins[is_history][None, :]
    similar: np.ndarray = close & same_queue
    return similar


def _compare(
    values: np.ndarray,
    higher_worse: bool,
    metric: str,
    is_recent: np.ndarray,
    is_history: np.ndarray,
    similar: np.ndarray,
) -> _Comparison | None:
    """Return how much worse the recent values are than their similar-load matches, or None
    when there is too little to compare or no consistent difference."""
    values = floats(values)
    found, ratio, current, baseline, rank, k = _compare_kernel(
        values[is_recent], values[is_history], similar, higher_worse, DEGRADED_RATIO["info"]
    )
    return _Comparison(metric, ratio, current, baseline, rank, k) if found else None


# Compiled: a median of the matches for each recent point was a dozen numpy calls apiece.
@njit(cache=True, error_model="numpy")
def _compare_kernel(
    now_values: np.ndarray,
    past: np.ndarray,
    similar: np.ndarray,
    higher_worse: bool,
    least_ratio: float,
) -> tuple[bool, float, float, float, float, int]:
    nothing = (False, 0.0, 0.0, 0.0, 0.0, 0)
    sign = 1.0 if higher_worse else -1.0
    current, baselines = np.empty(len(now_values)), np.empty(len(now_values))
    ranks = np.empty(len(now_values))
    k = 0
    for r in range(len(now_values)):
        matches = similar[r] & ~np.isnan(past)
        count = matches.sum()
        if math.isnan(now_values[r]) or count < MIN_MATCHES:
            continue
        matched = past[matches]
        current[k] = now_values[r]
        ranks[k] = (sign * matched < sign * now_values[r]).sum() / count
        baselines[k] = np.median(matched)
        k += 1
    if k < MIN_RECENT:
        return nothing
    current, baselines = current[:k], baselines[:k]
    rank = ranks[:k].mean()
    if rank < max(0.5 + RANK_SIGMAS * math.sqrt(1.0 / 12.0 / k), MIN_RANK):
        return nothing
    ratios = current / baselines if higher_worse else baselines / current
    if np.isnan(ratios).any():  # np.median's answer then, which no threshold passes
        return nothing
    ratio = np.median(ratios)
    if not math.isfinite(ratio) or ratio < least_ratio:
        return nothing
    return True, ratio, np.median(current), np.median(baselines), rank, k


def _degradation_severity(ratio: float) -> str:
    for severity in ("critical", "warning"):
        if ratio >= DEGRADED_RATIO[severity]:
            return severity
    return "info"
