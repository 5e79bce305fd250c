"""Features of a window of one host's checkpoints, for the pattern model. Pure, vectorised.

`features(window, now)` returns one float vector in FEATURE_NAMES order (NaN where a figure
is missing: the model handles missing values). Units are in the names; slopes are per
minute. The groups:

    now_*          the newest checkpoint's figures
    mean30s_*      noisy figures averaged over the last 30 s
    slope{30s,2m,5m}_*   robust slopes: the median of the changes between checkpoints half
                   the lookback apart, so one outlier cannot make a trend
    vs_baseline_*  the newest figure against the host's own baseline: the median of the
                   window before its last 2 minutes (a ratio, or a difference for
                   temperatures and memory)
    s_to_*         linear time to a limit (KV cache full, GPU memory full, the thermal
                   slowdown point), in seconds, capped at TIME_CAP_S
    headroom, throttle, progress, errors by category, GPU faults, the lifecycle state

About 0.2 ms for a 10-minute window of 5-second checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.checkpoint import ERROR_CATEGORIES
from learning.robust import mean
from learning.window import SERIES_INDEX, Window

GIB = 1024.0**3
WINDOW_S = 600.0  # the history one feature vector reads (learning.history.WINDOW_S)
# NVML's slowdown threshold is not in checkpoints; data-centre GPUs cut clocks near 87 °C
# (H100/H200/A100 report 87-90), so the headroom is measured to the lower end.
THERMAL_SLOWDOWN_C = 87.0
TIME_CAP_S = 3600.0
LOOKBACKS_S = {"30s": 30.0, "2m": 120.0, "5m": 300.0}
BASELINE_GAP_S = 120.0
RECENT_S = 30.0
PROGRESS_S = 60.0
AHEAD_S = 300.0  # the prediction horizon (learning.prediction.DEFAULT_HORIZON_S)
# Series extrapolated linearly, and the lookback of each line.
LINEAR = {"kv_cache_usage_pct": 120.0, "gpu_temp_c": 120.0, "gpu_mem_used_bytes": 300.0}

# Series (learning.window.SERIES names) and their scale: GPU and process memory in GiB.
NOW_SERIES = (
    "kv_cache_usage_pct", "requests_running", "requests_waiting", "preemptions_per_s",
    "generation_tokens_per_s", "prompt_tokens_per_s", "gpu_mem_used_pct", "gpu_util_pct",
    "gpu_temp_c", "gpu_power_w", "gpu_sm_clock_mhz", "gpu_throttled", "itl_p99_s",
    "ttft_p99_s", "queue_p99_s", "e2e_p99_s", "requests_failed_per_s", "http_5xx_per_s",
    "process_open_fds", "forward_progress", "health_ok",
)  # fmt: skip
MEAN_SERIES = (
    "kv_cache_usage_pct", "requests_waiting", "preemptions_per_s", "generation_tokens_per_s",
    "itl_p99_s", "ttft_p99_s", "queue_p99_s", "gpu_util_pct",
)  # fmt: skip
SLOPE_SERIES = (
    "kv_cache_usage_pct", "gpu_mem_used_bytes", "gpu_temp_c", "requests_waiting",
    "requests_running", "preemptions_per_s", "itl_p99_s", "ttft_p99_s",
    "generation_tokens_per_s", "prompt_tokens_per_s", "process_rss_bytes", "process_open_fds",
    "gpu_sm_clock_mhz",
)  # fmt: skip
RATIO_SERIES = (
    "itl_p99_s", "ttft_p99_s", "generation_tokens_per_s", "prompt_tokens_per_s", "requests_waiting",
)  # fmt: skip
DIFF_SERIES = ("gpu_temp_c", "gpu_mem_used_bytes", "kv_cache_usage_pct", "process_rss_bytes")
SCALE = {
    "gpu_mem_used_bytes": 1 / GIB,
    "process_rss_bytes": 1 / GIB,
    "gpu_mem_total_bytes": 1 / GIB,
}
STATE_GROUPS = ("serving", "degraded", "starting", "failed", "other")
STARTING = frozenset(
    {"pre_startup", "initializing", "loading_weights", "profiling_memory",
     "allocating_kv_cache", "capturing_cuda_graphs", "starting_api_server"}
)  # fmt: skip
UP_STATES = frozenset({"serving", "degraded"})
GPU_FAULT_KINDS = frozenset(
    {"xid", "ecc_dbe", "remapped_rows_pending", "remapped_rows_failure", "fallen_off_bus"}
)

_USED = tuple(
    dict.fromkeys(
        (
            *NOW_SERIES,
            *MEAN_SERIES,
            *SLOPE_SERIES,
            *RATIO_SERIES,
            *DIFF_SERIES,
            "gpu_mem_total_bytes",
        )
    )
)
_ROW = {name: i for i, name in enumerate(_USED)}
_SCALES = np.array([SCALE.get(name, 1.0) for name in _USED])
_COLUMNS = [SERIES_INDEX[name] for name in _USED]  # in a window's matrix of every series
_NOW_ROWS = [_ROW[s] for s in NOW_SERIES]
_MEAN_ROWS = [_ROW[s] for s in MEAN_SERIES]
_SLOPE_ROWS = [_ROW[s] for s in SLOPE_SERIES]


def _unit(name: str) -> str:
    return name.replace("_bytes", "_gib")


FEATURE_NAMES: tuple[str, ...] = (
    *(f"now_{_unit(s)}" for s in NOW_SERIES),
    *(f"mean30s_{s}" for s in MEAN_SERIES),
    *(f"slope{lb}_{_unit(s)}_per_min" for lb in LOOKBACKS_S for s in SLOPE_SERIES),
    *(f"vs_baseline_ratio_{s}" for s in RATIO_SERIES),
    *(f"vs_baseline_diff_{_unit(s)}" for s in DIFF_SERIES),
    "s_to_kv_cache_full", "s_to_gpu_mem_full_2m", "s_to_gpu_mem_full_5m", "s_to_thermal_slowdown",
    "gpu_mem_headroom_gib", "gpu_temp_headroom_c", "kv_cache_headroom_pct",
    *(f"linear_{_unit(s)}_in_{AHEAD_S:g}s" for s in LINEAR),
    "throttled_fraction_2m", "sm_clock_vs_window_max", "no_progress_fraction_60s",
    "s_since_progress", "unhealthy_fraction_60s",
    *(f"errors_{c}" for c in ERROR_CATEGORIES), "gpu_fault_events", "thermal_events",
    *(f"state_{g}" for g in STATE_GROUPS), "failed_fraction", "age_s",
)  # fmt: skip
INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def features(w: Window, now: float) -> np.ndarray:
    """Return the features of window `w` as of `now` (epoch s), in FEATURE_NAMES order.

    Only the last WINDOW_S of `w` is read, whatever its length, so a longer window (the
    analysis keeps 15 minutes) gives the same features as the training windows. The figures
    are read since the server last came up: a restart starts them again (a trend across it
    compares two processes), while errors and states are counted over the whole window.
    """
    first = _start(w.t, now - WINDOW_S)
    if first >= len(w):
        return np.full(len(FEATURE_NAMES), math.nan)
    up = max(first, _since_up(w.states))
    matrix = w.cache.get("matrix")  # every series at once, when the window was built from rows
    if matrix is not None:
        m = matrix[up:, _COLUMNS].T * _SCALES[:, None]
    else:
        m = np.vstack([w.series[name][up:] for name in _USED]) * _SCALES[:, None]
    t = w.t[up:]
    now_col = m[:, -1]
    parts = [
        now_col[_NOW_ROWS],
        _nanmean_rows(m[_MEAN_ROWS, _start(t, now - RECENT_S) :]),
    ]
    slopes = _slopes(m[_SLOPE_ROWS], t, now)
    parts.append(slopes.ravel())
    parts.append(_baseline_features(m, t, now))
    parts.append(_limits(now_col, slopes))
    parts.append(_linear(m, t, now))
    parts.append(_health(m, t, now))
    parts.append(_events(w.checkpoints[first:]))
    parts.append(_state(w.states[first:], t, now))
    return np.concatenate(parts)


def _since_up(states: list[str]) -> int:
    """Return the index from which the server has been up (serving or degraded) without a
    break; the whole window when it is not up now."""
    i = len(states)
    while i > 0 and states[i - 1] in UP_STATES:
        i -= 1
    return i if i < len(states) else 0


def _start(t: np.ndarray, t0: float) -> int:
    return int(np.searchsorted(t, t0, side="left"))


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(a)
    count = valid.sum(axis=1)
    total = np.where(valid, a, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), math.nan)


def _nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """Return each row's median ignoring NaN (NaN for an empty row); np.nanmedian is slow."""
    if a.shape[1] == 0:
        return np.full(a.shape[0], math.nan)
    ordered = np.sort(a, axis=1)  # NaN sorts last
    count = (~np.isnan(a)).sum(axis=1)
    rows = np.arange(a.shape[0])
    lo = ordered[rows, np.maximum((count - 1) // 2, 0)]
    hi = ordered[rows, np.maximum(count // 2, 0)]
    return np.where(count > 0, (lo + hi) / 2, math.nan)


def _slopes(m: np.ndarray, t: np.ndarray, now: float) -> np.ndarray:
    """Return robust slopes per minute, shape (lookbacks, series)."""
    width = len(t)
    pairs = []
    for lookback_s in LOOKBACKS_S.values():
        seg_start = _start(t, now - lookback_s)
        n = width - seg_start
        half = n // 2
        if half < 1:
            pairs.append(np.full((m.shape[0], 1), math.nan))
            continue
        dt = t[seg_start + half :] - t[seg_start : width - half]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = (m[:, seg_start + half :] - m[:, seg_start : width - half]) / dt * 60.0
        pairs.append(d)
    widest = max(p.shape[1] for p in pairs)
    padded = np.full((len(pairs) * m.shape[0], widest), math.nan)
    for i, p in enumerate(pairs):
        padded[i * m.shape[0] : (i + 1) * m.shape[0], : p.shape[1]] = p
    return _nanmedian_rows(padded).reshape(len(pairs), m.shape[0])


def _baseline_features(m: np.ndarray, t: np.ndarray, now: float) -> np.ndarray:
    rows = [_ROW[s] for s in (*RATIO_SERIES, *DIFF_SERIES)]
    before = m[rows, : _start(t, now - BASELINE_GAP_S)]
    baseline = _nanmedian_rows(before)
    current = m[rows, -1]
    k = len(RATIO_SERIES)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.abs(baseline[:k]) > 1e-9, current[:k] / baseline[:k], math.nan)
    return np.concatenate([ratio, current[k:] - baseline[k:]])


def _limits(now_col: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """Return the linear times to the limits and the headrooms."""
    col = {s: i for i, s in enumerate(SLOPE_SERIES)}
    used, total = now_col[_ROW["gpu_mem_used_bytes"]], now_col[_ROW["gpu_mem_total_bytes"]]
    kv, temp = now_col[_ROW["kv_cache_usage_pct"]], now_col[_ROW["gpu_temp_c"]]
    mem_headroom, temp_headroom, kv_headroom = total - used, THERMAL_SLOWDOWN_C - temp, 100.0 - kv
    return np.array(
        [
            _time_to(kv_headroom, slopes[1, col["kv_cache_usage_pct"]]),
            _time_to(mem_headroom, slopes[1, col["gpu_mem_used_bytes"]]),
            _time_to(mem_headroom, slopes[2, col["gpu_mem_used_bytes"]]),
            _time_to(temp_headroom, slopes[1, col["gpu_temp_c"]]),
            mem_headroom,
            temp_headroom,
            kv_headroom,
        ]
    )


def _linear(m: np.ndarray, t: np.ndarray, now: float) -> np.ndarray:
    """Return where a least-squares line through each LINEAR series' lookback reaches
    AHEAD_S from now: Prometheus' predict_linear, which operators alert on."""
    found = []
    for name, lookback_s in LINEAR.items():
        start = _start(t, now - lookback_s)
        y, x = m[_ROW[name], start:], t[start:] - now
        known = ~np.isnan(y)
        y, x = y[known], x[known]
        if len(x) < 3:
            found.append(math.nan)
            continue
        x_mean, y_mean = mean(x), mean(y)
        dx = x - x_mean
        spread = float(dx @ dx)
        if spread <= 0:
            found.append(math.nan)
            continue
        slope = float(dx @ (y - y_mean)) / spread
        found.append(y_mean + slope * (AHEAD_S - x_mean))
    return np.array(found)


def _time_to(headroom: float, slope_per_min: float) -> float:
    """Return seconds until `headroom` is used up at `slope_per_min`, capped; NaN if unknown."""
    if math.isnan(headroom) or math.isnan(slope_per_min):
        return math.nan
    if headroom <= 0:
        return 0.0
    if slope_per_min <= 0:
        return TIME_CAP_S
    return min(TIME_CAP_S, 60.0 * headroom / slope_per_min)


def _health(m: np.ndarray, t: np.ndarray, now: float) -> np.ndarray:
    last_2m = _start(t, now - 120.0)
    last_60s = _start(t, now - PROGRESS_S)
    throttled = m[_ROW["gpu_throttled"], last_2m:]
    clock = m[_ROW["gpu_sm_clock_mhz"]]
    progress = m[_ROW["forward_progress"], last_60s:]
    health = m[_ROW["health_ok"], last_60s:]
    progressed = np.flatnonzero(m[_ROW["forward_progress"]] == 1.0)
    since = now - t[progressed[-1]] if len(progressed) else now - t[0]
    with np.errstate(invalid="ignore"):
        clock_max = np.nanmax(clock) if np.any(~np.isnan(clock)) else math.nan
        clock_ratio = clock[-1] / clock_max if clock_max and clock_max > 0 else math.nan
    return np.array(
        [
            _fraction(throttled > 0, throttled),
            clock_ratio,
            _fraction(progress == 0.0, progress),
            since,
            _fraction(health == 0.0, health),
        ]
    )


def _fraction(hits: np.ndarray, values: np.ndarray) -> float:
    known = int(np.count_nonzero(~np.isnan(values)))
    return float(np.count_nonzero(hits)) / known if known else math.nan


def _events(checkpoints: Sequence[dict[str, Any]]) -> np.ndarray:
    """Return error counts by category, then GPU fault and thermal event counts."""
    counts = dict.fromkeys(ERROR_CATEGORIES, 0.0)
    faults = thermal = 0.0
    for cp in checkpoints:
        for e in cp.get("errors") or ():
            category = e.get("category")
            if category in counts:
                counts[category] += float(e.get("count") or 1)
        for g in cp.get("gpu_events") or ():
            kind = g.get("kind")
            faults += kind in GPU_FAULT_KINDS
            thermal += kind == "thermal_throttle"
    return np.array([*counts.values(), faults, thermal])


def _state(states: list[str], t: np.ndarray, now: float) -> np.ndarray:
    newest = states[-1]
    group = (
        "failed"
        if newest.startswith("failed_")
        else "starting"
        if newest in STARTING
        else newest
        if newest in STATE_GROUPS
        else "other"
    )
    failed = sum(s.startswith("failed_") for s in states) / len(states)
    one_hot = [float(g == group) for g in STATE_GROUPS]
    # Not the window's span: how long the agent has watched says nothing about a failure,
    # and in scenario timelines it would stand in for the uptime a failure comes at.
    return np.array([*one_hot, failed, now - float(t[-1])])
