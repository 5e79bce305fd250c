"""Features of a window of one host's checkpoints, for the pattern model. Pure.

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

The figures from the series are one loop compiled by numba (`_series_features`): as numpy
calls they were about 60 per window, each mostly its own overhead on arrays this short.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from learning.robust import floats
from learning.window import COLUMN_INDEX, EVENTS, SERIES, Window, events

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
LINEAR = {"kv_cache_usage_pct": 120.0, "gpu_temp_c": 120.0, "gpu_mem_fullest_used_bytes": 300.0}

# Series (learning.window.SERIES names) and their scale: GPU and process memory in GiB. GPU
# memory is the fullest GPU's and power a GPU's mean, so a pattern learnt on hosts of one GPU
# reads the same on hosts of eight.
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
    "kv_cache_usage_pct", "gpu_mem_fullest_used_bytes", "gpu_temp_c", "requests_waiting",
    "requests_running", "preemptions_per_s", "itl_p99_s", "ttft_p99_s",
    "generation_tokens_per_s", "prompt_tokens_per_s", "process_rss_bytes", "process_open_fds",
    "gpu_sm_clock_mhz",
)  # fmt: skip
RATIO_SERIES = (
    "itl_p99_s", "ttft_p99_s", "generation_tokens_per_s", "prompt_tokens_per_s", "requests_waiting",
)  # fmt: skip
DIFF_SERIES = (
    "gpu_temp_c", "gpu_mem_fullest_used_bytes", "kv_cache_usage_pct", "process_rss_bytes",
)  # fmt: skip
SCALE = {
    "gpu_mem_fullest_used_bytes": 1 / GIB,
    "process_rss_bytes": 1 / GIB,
    "gpu_mem_fullest_total_bytes": 1 / GIB,
}
STATE_GROUPS = ("serving", "degraded", "starting", "failed", "other")
STARTING = frozenset(
    {"pre_startup", "initializing", "loading_weights", "profiling_memory",
     "allocating_kv_cache", "capturing_cuda_graphs", "starting_api_server"}
)  # fmt: skip
UP_STATES = frozenset({"serving", "degraded"})

_USED = tuple(
    dict.fromkeys(
        (
            *NOW_SERIES,
            *MEAN_SERIES,
            *SLOPE_SERIES,
            *RATIO_SERIES,
            *DIFF_SERIES,
            "gpu_mem_fullest_total_bytes",
        )
    )
)
_ROW = {name: i for i, name in enumerate(_USED)}
_SCALES = np.array([SCALE.get(name, 1.0) for name in _USED])
# Where each used series is: in a window's matrix of every column (learning.window.COLUMNS),
# or in one of just these; the event counts follow them in either.
_COLUMNS = np.array([COLUMN_INDEX[name] for name in _USED], dtype=np.int64)
_OWN_COLUMNS = np.arange(len(_USED), dtype=np.int64)
# The kernel's tables (numba reads module arrays and tuples as constants when it compiles).
_NOW_ROWS = np.array([_ROW[s] for s in NOW_SERIES], dtype=np.int64)
_MEAN_ROWS = np.array([_ROW[s] for s in MEAN_SERIES], dtype=np.int64)
_SLOPE_ROWS = np.array([_ROW[s] for s in SLOPE_SERIES], dtype=np.int64)
_BASELINE_ROWS = np.array([_ROW[s] for s in (*RATIO_SERIES, *DIFF_SERIES)], dtype=np.int64)
_LOOKBACKS = tuple(LOOKBACKS_S.values())
_LINEAR_ROWS = np.array([_ROW[s] for s in LINEAR], dtype=np.int64)
_LINEAR_LOOKBACKS = np.array(list(LINEAR.values()))
_SLOPE_KV = SLOPE_SERIES.index("kv_cache_usage_pct")
_SLOPE_MEM = SLOPE_SERIES.index("gpu_mem_fullest_used_bytes")
_SLOPE_TEMP = SLOPE_SERIES.index("gpu_temp_c")
_KV, _MEM, _MEM_TOTAL, _TEMP = (
    _ROW[s]
    for s in ("kv_cache_usage_pct", "gpu_mem_fullest_used_bytes", "gpu_mem_fullest_total_bytes",
              "gpu_temp_c")
)  # fmt: skip
_THROTTLED, _CLOCK, _PROGRESS, _HEALTH = (
    _ROW[s] for s in ("gpu_throttled", "gpu_sm_clock_mhz", "forward_progress", "health_ok")
)


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
    *EVENTS,
    *(f"state_{g}" for g in STATE_GROUPS), "failed_fraction", "age_s",
)  # fmt: skip
INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
# The ones _series_features computes: all but the state.
_SERIES_FEATURES = INDEX[f"state_{STATE_GROUPS[0]}"]


def features(w: Window, now: float) -> np.ndarray:
    """Return the features of window `w` as of `now` (epoch s), in FEATURE_NAMES order.

    Only the last WINDOW_S of `w` is read, whatever its length, so a longer window (the
    analysis keeps 15 minutes) gives the same features as the training windows. The figures
    are read since the server last came up: a restart starts them again (a trend across it
    compares two processes), while errors and states are counted over the whole window.
    """
    t = floats(w.t)
    first = int(np.searchsorted(t, now - WINDOW_S, side="left"))
    if first >= len(w):
        return np.full(len(FEATURE_NAMES), math.nan)
    up = max(first, _since_up(w.states))
    matrix = w.cache.get("matrix")  # every column at once, when the window was built from rows
    if matrix is None:
        counted = [events(cp) for cp in w.checkpoints] or [(0.0,) * len(EVENTS)] * len(w)
        matrix = np.column_stack([*(w.series[name] for name in _USED), np.array(counted)])
        columns, events_from = _OWN_COLUMNS, len(_USED)
    else:
        columns, events_from = _COLUMNS, len(SERIES)
    found = _series_features(floats(matrix), columns, events_from, t, first, up, float(now))
    return np.concatenate((found, _state(w.states[first:], t, now)))


def _since_up(states: list[str]) -> int:
    """Return the index from which the server has been up (serving or degraded) without a
    break; the whole window when it is not up now."""
    if UP_STATES.issuperset(states):  # the common case, without a loop in Python
        return 0
    i = len(states)
    while i > 0 and states[i - 1] in UP_STATES:
        i -= 1
    return i if i < len(states) else 0


# Division as numpy does it (x / 0 is inf, 0 / 0 NaN), which the slopes and ratios rely on.
@njit(cache=True, error_model="numpy")
def _series_features(
    matrix: np.ndarray,
    columns: np.ndarray,
    events_from: int,
    t_all: np.ndarray,
    first: int,
    up: int,
    now: float,
) -> np.ndarray:
    """Return every feature but the state's: those of the series (its `columns` in `matrix`)
    from the rows since the server came up (`up`), the sums of the event counts (its columns
    from `events_from` on) from the rows of the window's span (`first`)."""
    t = t_all[up:]
    width = len(t)
    m = np.empty((len(columns), width))
    for k in range(len(columns)):
        for j in range(width):
            m[k, j] = matrix[up + j, columns[k]] * _SCALES[k]
    now_col = m[:, width - 1]
    found = np.empty(_SERIES_FEATURES)
    at = 0
    for k in _NOW_ROWS:
        found[at] = now_col[k]
        at += 1
    recent = _start(t, now - RECENT_S)
    for k in _MEAN_ROWS:
        found[at] = _nanmean(m[k, recent:])
        at += 1
    slopes = _slopes(m, t, now)
    for i in range(len(_LOOKBACKS)):
        for s in range(len(_SLOPE_ROWS)):
            found[at] = slopes[i, s]
            at += 1
    at = _baseline(m, t, now, found, at)
    at = _limits(now_col, slopes, found, at)
    at = _linear(m, t, now, found, at)
    at = _health(m, t, now, found, at)
    for e in range(len(EVENTS)):
        found[at + e] = np.nansum(matrix[first:, events_from + e])
    return found


@njit(cache=True)
def _start(t: np.ndarray, t0: float) -> int:
    return int(np.searchsorted(t, t0))


@njit(cache=True)
def _nanmean(x: np.ndarray) -> float:
    total, count = 0.0, 0
    for v in x:
        if not math.isnan(v):
            total += v
            count += 1
    return total / count if count else math.nan


@njit(cache=True)
def _nanmedian(x: np.ndarray) -> float:
    """Return the median of `x` ignoring NaN (NaN when none is left)."""
    known = np.sort(x[~np.isnan(x)])
    n = len(known)
    if n == 0:
        return math.nan
    middle: float = (known[(n - 1) // 2] + known[n // 2]) / 2
    return middle


@njit(cache=True, error_model="numpy")
def _slopes(m: np.ndarray, t: np.ndarray, now: float) -> np.ndarray:
    """Return robust slopes per minute, shape (lookbacks, series): over each lookback, the
    median of the changes between checkpoints half the lookback apart."""
    width = len(t)
    slopes = np.full((len(_LOOKBACKS), len(_SLOPE_ROWS)), math.nan)
    for i in range(len(_LOOKBACKS)):
        seg_start = _start(t, now - _LOOKBACKS[i])
        half = (width - seg_start) // 2
        if half < 1:
            continue
        count = width - seg_start - half
        d = np.empty(count)
        for s in range(len(_SLOPE_ROWS)):
            y = m[_SLOPE_ROWS[s]]
            for j in range(count):
                a, b = seg_start + j, seg_start + half + j
                d[j] = (y[b] - y[a]) / (t[b] - t[a]) * 60.0
            slopes[i, s] = _nanmedian(d)
    return slopes


@njit(cache=True, error_model="numpy")
def _baseline(m: np.ndarray, t: np.ndarray, now: float, found: np.ndarray, at: int) -> int:
    """Write the newest figures against the window's median before its last BASELINE_GAP_S:
    ratios for RATIO_SERIES, then differences for DIFF_SERIES."""
    before = _start(t, now - BASELINE_GAP_S)
    ratios = len(RATIO_SERIES)
    for i in range(len(_BASELINE_ROWS)):
        y = m[_BASELINE_ROWS[i]]
        baseline = _nanmedian(y[:before])
        current = y[len(y) - 1]
        if i >= ratios:
            found[at] = current - baseline
        elif abs(baseline) > 1e-9:
            found[at] = current / baseline
        else:
            found[at] = math.nan
        at += 1
    return at


@njit(cache=True)
def _limits(now_col: np.ndarray, slopes: np.ndarray, found: np.ndarray, at: int) -> int:
    """Write the linear times to the limits and the headrooms."""
    mem_headroom = now_col[_MEM_TOTAL] - now_col[_MEM]
    temp_headroom = THERMAL_SLOWDOWN_C - now_col[_TEMP]
    kv_headroom = 100.0 - now_col[_KV]
    found[at] = _time_to(kv_headroom, slopes[1, _SLOPE_KV])
    found[at + 1] = _time_to(mem_headroom, slopes[1, _SLOPE_MEM])
    found[at + 2] = _time_to(mem_headroom, slopes[2, _SLOPE_MEM])
    found[at + 3] = _time_to(temp_headroom, slopes[1, _SLOPE_TEMP])
    found[at + 4] = mem_headroom
    found[at + 5] = temp_headroom
    found[at + 6] = kv_headroom
    return at + 7


@njit(cache=True)
def _time_to(headroom: float, slope_per_min: float) -> float:
    """Return seconds until `headroom` is used up at `slope_per_min`, capped; NaN if unknown."""
    if math.isnan(headroom) or math.isnan(slope_per_min):
        return math.nan
    if headroom <= 0:
        return 0.0
    if slope_per_min <= 0:
        return TIME_CAP_S
    return min(TIME_CAP_S, 60.0 * headroom / slope_per_min)


@njit(cache=True)
def _linear(m: np.ndarray, t: np.ndarray, now: float, found: np.ndarray, at: int) -> int:
    """Write where a least-squares line through each LINEAR series' lookback reaches AHEAD_S
    from now: Prometheus' predict_linear, which operators alert on."""
    for i in range(len(_LINEAR_ROWS)):
        start = _start(t, now - _LINEAR_LOOKBACKS[i])
        y = m[_LINEAR_ROWS[i], start:]
        known = ~np.isnan(y)
        y, x = y[known], t[start:][known] - now
        found[at] = math.nan
        if len(x) >= 3:
            x_mean, y_mean = x.mean(), y.mean()
            dx = x - x_mean
            spread = np.sum(dx * dx)
            if spread > 0:
                slope = np.sum(dx * (y - y_mean)) / spread
                found[at] = y_mean + slope * (AHEAD_S - x_mean)
        at += 1
    return at


@njit(cache=True)
def _health(m: np.ndarray, t: np.ndarray, now: float, found: np.ndarray, at: int) -> int:
    """Write the throttled share of the last 2 minutes, the SM clock against the window's
    highest, the shares of the last minute without progress and unhealthy, and the seconds
    since the last progress."""
    last_2m = _start(t, now - 120.0)
    last_60s = _start(t, now - PROGRESS_S)
    clock = m[_CLOCK]
    known_clock = clock[~np.isnan(clock)]
    clock_max = known_clock.max() if len(known_clock) else math.nan
    progress = m[_PROGRESS]
    progressed = np.flatnonzero(progress == 1.0)
    found[at] = _share(m[_THROTTLED, last_2m:], 1)
    found[at + 1] = clock[-1] / clock_max if clock_max > 0 else math.nan
    found[at + 2] = _share(progress[last_60s:], 0)
    found[at + 3] = now - (t[progressed[-1]] if len(progressed) else t[0])
    found[at + 4] = _share(m[_HEALTH, last_60s:], 0)
    return at + 5


@njit(cache=True)
def _share(x: np.ndarray, positive: int) -> float:
    """Return the share of known values above 0 (`positive`) or equal to 0; NaN if none."""
    hits, known = 0, 0
    for v in x:
        if not math.isnan(v):
            known += 1
            hits += (v > 0.0) if positive else (v == 0.0)
    return hits / known if known else math.nan


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
    # The failed states counted in one string search: a loop over them cost 16 us.
    failed = ("\n" + "\n".join(states)).count("\nfailed_") / len(states)
    one_hot = [float(g == group) for g in STATE_GROUPS]
    # Not the window's span: how long the agent has watched says nothing about a failure,
    # and in scenario timelines it would stand in for the uptime a failure comes at.
    return np.array([*one_hot, failed, now - float(t[-1])])
