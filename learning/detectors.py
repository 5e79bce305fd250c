"""Named detectors over one host's window: leaks, slowdowns and resources running out. Pure.

Each detector takes a Window (learning/window.py) and `now` (epoch seconds) and returns a
Finding or None. A finding says what, how bad, how long until the limit (when there is one),
and the figures behind it. Severity follows the time left:

    critical  the limit is within CRITICAL_S (the prediction horizon), or already reached
    warning   within WARNING_S
    info      an early warning: the trend is confirmed but the limit is further off (or unknown)

They are written to stay quiet on a healthy host under steady load: a trend must be
consistent (Mann-Kendall), not one jump (quarter medians, largest step), and a full KV cache
is only exhaustion when the queue grows or requests are preempted; saturation is not.
Every detector is numpy over the window; the loops that were mostly numpy's own call overhead
on arrays this short (the leak test, the similar-load comparison) are compiled by numba
(bench/learning_speed.py measures the detectors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from learning.forecast import RUN_STATES, current_run_start, local_trend, newest, recent, series
from learning.prediction import DEFAULT_HORIZON_S, Evidence
from learning.robust import (
    Trend,
    floats,
    median,
    quarter_rises,
    scale_of,
    trend,
    trend_of,
)
from learning.window import Window, disk_space, gpu_memories, obj, padded

CRITICAL_S = DEFAULT_HORIZON_S
WARNING_S = 1800.0
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

# Leaks (GPU memory, host memory, file descriptors)
LEAK_LOOKBACK_S = 3600.0
MIN_LEAK_POINTS = 8
LEAK_Z = 3.0  # Mann-Kendall z a leak's rise must reach
MAX_STEP_SHARE = 0.5  # one step carrying more than this share of the rise is a step, not a leak
MIN_GPU_LEAK_SHARE = 0.002  # a GPU leak must have grown by 0.2 % of the GPU's memory
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default, when the checkpoint does not say
MIB = 1024.0**2

# KV cache and queue
KV_LOOKBACK_S = 120.0
KV_FULL_PCT = 97.0  # at or above this the cache is full for admission purposes
KV_LIMIT_PCT = 100.0
KV_HIGH_PCT = 90.0
KV_SUSTAINED_S = 300.0  # a rise that has lasted minutes is reported this far ahead of full
KV_EARLY_S = 120.0  # a rise without pressure is reported only when it arrives this soon
QUEUE_Z = 2.5
MIN_QUEUE_RISE = 5.0  # requests: a queue going from 0 to 3 is noise
PLATEAU_SHARE = 0.1  # running moving less than this share over the lookback is a plateau
PREEMPTING_SHARE = 0.5  # preemptions in at least this share of recent checkpoints

# KV-cache demand: requests getting longer
DEMAND_KV_LOOKBACK_S = 90.0  # the cache's growth, fitted in log space
LENGTH_STEP_S = 30.0  # each length figure is the counters' difference over this span
MIN_LENGTH_REQUESTS = 5.0  # fewer requests in a step and its mean length is noise
# The newest step's mean length is compared with the host's usual one: the median of the
# steps that ended this long before it. A level against a baseline, not a line through the
# last two minutes, which is as flat as its first minute: measured on the simulator's demand
# ramps (kv_cache_exhaustion, seeds 0-23 and 3000-3023: 69 storms) and 96 healthy host-hours
# (healthy and load_spike, seeds 4000-4003 and 7000-7003), the line caught 41 storms at a
# median lead of 36-44 s with 3 false alarms; the baseline 49 at 40-45 s with none.
LENGTH_BASELINE_S = (90.0, 300.0)
MIN_BASELINE_STEPS = 4
MIN_DEMAND_KV_POINTS = 6
# A fresh server's first requests to finish are its shortest ones: its first minute looks like
# requests getting longer, and is no baseline.
WARM_UP_S = 60.0
MIN_KV_LOG_SLOPE = 0.004  # per second: the cache's use grows by at least 0.4 % of itself a second
# The requests' mean length is 20 % over the host's usual one. On 24 healthy host-hours a
# host whose cache was rising reached 1.22 times its usual length in 1 step of 1,000; 1.15
# caught no storm more and warned no earlier.
MIN_LENGTH_GROWTH = 1.2
DEMAND_ETA_S = DEFAULT_HORIZON_S  # how far ahead of full the growth is trusted
# Below this the growth would have to compound more than threefold to fill the cache, and a
# healthy host's cache swings that much in minutes (both false alarms left in 96 healthy
# host-hours started at 20-22 %; at 20 % with the baseline below, 3 in seeds 7000-7003).
DEMAND_MIN_KV_PCT = 30.0
# The growth must have held at the checkpoint before too: one reading that crosses the lines
# is noise as often as not. Against the baseline 5 s is enough (15 s cost 9-14 s of lead and
# 3 storms); the line needed 15 s (at 5 s: 5 false alarms in the 96 healthy host-hours).
DEMAND_PERSIST_S = 5.0
# The newest reading this far under the fitted line means the rise has ended (a load spike's
# traffic receded); the 90 s fit still says it goes on. One of three false alarms in 48 healthy
# host-hours (seeds 4000-4003) opened so, at 28 % against a fitted 52 %. At 0.8 one more went
# (27 % against 32 %), but a demand ramp that paused at 40 % for half a minute warned 40 s later.
DEMAND_BELOW_FIT = 0.7
# The finished requests' own lengths (vLLM's output-length histogram) must be over their usual
# length too, where the checkpoints carry them: they lag, so the line is lower. A load spike
# (more requests of the usual length running at once) lifts the counters' figure, not these.
MIN_FINISHED_GROWTH = 1.05

# File descriptors
FD_HIGH_SHARE = 0.9  # this share of the limit in use is critical, trend or not
MIN_FD_RISE = 10.0

# Host memory: little left is under both lines; a fall must take at least the larger of these.
HOST_MEMORY_LOW_SHARE = 0.03
HOST_MEMORY_LOW_BYTES = 4 * 1024.0**3
MIN_HOST_MEMORY_FALL_SHARE = 0.01
MIN_HOST_MEMORY_FALL = 512 * 1024.0**2

# Disks: nearly full is under both lines (a 64 MiB /dev/shm has never a GiB free; 2 % of a
# 4 TB disk is 80 GB, room for hours of logs).
DISK_LOW_SHARE = 0.02
DISK_LOW_BYTES = 1024.0**3
# A filling disk has taken at least this much in the lookback (the leak test also asks it to
# rise above its own noise): a log line now and then is not a trend.
MIN_DISK_FILL_SHARE = 0.001
MIN_DISK_FILL_BYTES = 64 * 1024.0**2

# Temperature
THERMAL_LOOKBACK_S = 300.0
# A GPU warming after a start: 50-60 s in, its dozen readings fit a line to the slowdown point
# (a line gave 2 false critical warnings in 144 healthy host-hours). Its rate against its
# level (Newton's law, _newton) says it heads for 52-74 C; a failing cooling's, for over 100 C.
HEATING_STEP_S = 15.0  # whole degrees: the rate over one 5 s poll is mostly rounding
MIN_HEATING_PAIRS = 4
MIN_RISE_C = 3.0  # whole degrees: less is a reading's rounding and noise
RISE_RATE_S = 30.0  # the rise's rate now: over its newest half minute (3 readings at least)
MIN_RISE_S = 30.0  # a shorter rise cannot show whether it bends
# A rise is projected at most this many times as long as it has kept its pace (a step of
# HEATING_STEP_S at under SUSTAINED_SHARE of its newest rate ends that). On the simulator's
# training seeds, 2 and 3 raised no false alarm in 32 healthy host-hours; 4 raised 6.
RISE_TRUST = 2.0
SUSTAINED_SHARE = 0.5
SLOWDOWN_C = 87.0  # NVML's slowdown threshold on H100s is about 87-90 C
THERMAL_MARGIN_C = 5.0

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
class Finding:
    what: str  # the detector: "gpu_memory_leak", "kv_cache_exhaustion", ...
    failure_type: str  # the learning.prediction.FAILURE_TYPES entry it is a precursor of
    severity: str  # "info" (early warning), "warning" or "critical"
    summary: str  # one sentence for the operator
    time_to_exhaustion_s: float | None  # from `now`; 0 when already there; None: no limit in sight
    figures: dict[str, float] = field(default_factory=dict)  # the numbers, units in the names

    def evidence(self) -> Evidence:
        """Return this finding as a Prediction's evidence."""
        return Evidence(f"detector:{self.what}", self.summary, self.time_to_exhaustion_s)


def severity_for(eta_s: float | None) -> str:
    """Return the severity of a confirmed trend that reaches its limit in `eta_s` seconds."""
    if eta_s is not None and eta_s <= CRITICAL_S:
        return "critical"
    if eta_s is not None and eta_s <= WARNING_S:
        return "warning"
    return "info"


def detect(
    w: Window,
    now: float,
    *,
    host_memory_limit_bytes: float | None = None,
    fd_limit: float | None = None,
    slowdown_c: float = SLOWDOWN_C,
    waiting_limit: float | None = None,
) -> list[Finding]:
    """Return every detector's finding on `w`, the most urgent first."""
    rss_leak = host_memory_leak(w, now, limit_bytes=host_memory_limit_bytes)
    findings = [
        gpu_memory_leak(w, now),
        rss_leak,
        # vLLM's own leak names the cause already; this one is for memory taken by others.
        host_memory_exhaustion(w, now) if rss_leak is None else None,
        performance_degradation(w, now),
        kv_cache_exhaustion(w, now),
        kv_cache_demand(w, now),
        queue_growth(w, now, waiting_limit=waiting_limit),
        fd_exhaustion(w, now, fd_limit=fd_limit),
        disk_exhaustion(w, now),
        thermal(w, now, slowdown_c=slowdown_c),
    ]
    found = [f for f in findings if f is not None]
    return sorted(found, key=lambda f: (SEVERITY_ORDER[f.severity], _eta_key(f)))


def _eta_key(f: Finding) -> float:
    return math.inf if f.time_to_exhaustion_s is None else f.time_to_exhaustion_s


# Leaks ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leak:
    trend: Trend
    rise: float  # over the leaking segment, in the series' units
    points: int


def _leak(t: np.ndarray, y: np.ndarray, min_rise: float) -> _Leak | None:
    """Return the leak in `y` (NaN-free, oldest first), or None when it is not one.

    1. The leak starts after the last point still at the run's early level (so a flat
       stretch before it does not dilute the trend).
    2. From there the rise must be consistent (Mann-Kendall z >= LEAK_Z), larger than
       `min_rise` and than the noise, present in every quarter, and not mostly one step.
    """
    if len(y) < MIN_LEAK_POINTS:
        return None
    found, tr, rise, points = _leak_kernel(floats(t), floats(y), float(min_rise))
    return _Leak(tr, rise, points) if found else None


# Compiled: three detectors run it on every analysis, and as numpy calls on 120 points it
# cost 20 us with no leak in sight and 150 us with one.
@njit(cache=True)
def _leak_kernel(t: np.ndarray, y: np.ndarray, min_rise: float) -> tuple[bool, Trend, float, int]:
    nothing = (False, Trend(0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0), 0.0, 0)
    noise = scale_of(np.diff(y)) / math.sqrt(2.0)
    base = np.median(y[: max(3, len(y) // 4)])
    at_base = np.flatnonzero(y <= base + max(3.0 * noise, 1e-9 * abs(base)))
    start = at_base[-1] if len(at_base) else 0
    t, y = t[start:], y[start:]
    # Every quarter rising is the cheapest test, and a flat series mostly fails it: first.
    if len(y) < MIN_LEAK_POINTS or (quarter_rises(y) <= 0).any():
        return nothing
    tr = trend_of(t, y)
    rise = tr.slope * tr.span_s
    if tr.z < LEAK_Z or rise < max(min_rise, 6.0 * noise) or rise <= 0:
        return nothing
    if np.diff(y).max() > MAX_STEP_SHARE * rise:
        return nothing
    return True, tr, rise, len(y)


def _eta_to(tr: Trend, limit: float | None, now: float) -> float | None:
    """Return seconds from `now` until the line `tr` reaches `limit` (0 if it has)."""
    if limit is None or tr.slope <= 0:
        return None
    return max(float(limit - tr.value_at(max(now, tr.t_ref))) / tr.slope, 0.0)


def gpu_memory_leak(w: Window, now: float, lookback_s: float = LEAK_LOOKBACK_S) -> Finding | None:
    """Return a finding when one GPU's used memory rises steadily in the current run.

    vLLM allocates its budget (gpu_memory_utilization x total) at start and then stays flat,
    so a steady rise while serving is a leak (or a foreign process growing); it ends in a
    CUDA OOM when it reaches the GPU's total. The GPU that gained the most is the one tested.
    """
    start = current_run_start(w)
    t, used, total, index = _gpu_memory(w, start)
    keep = (t >= t[-1] - lookback_s) & ~np.isnan(used) if len(t) else np.zeros(0, bool)
    if keep.sum() < MIN_LEAK_POINTS or math.isnan(total):
        return None
    leak = _leak(t[keep], used[keep], MIN_GPU_LEAK_SHARE * total)
    if leak is None:
        return None
    eta = _eta_to(leak.trend, total, now)
    util = _gpu_memory_utilization(w)
    level = min(leak.trend.value_at(max(now, leak.trend.t_ref)), total)
    rate_mib = leak.trend.slope / MIB
    return Finding(
        what="gpu_memory_leak",
        failure_type="cuda_oom",
        severity=severity_for(eta),
        summary=f"GPU {index} memory rising {rate_mib:.1f} MiB/s, "
        f"{100 * level / total:.1f} % of its total (vLLM's budget {100 * util:.0f} %); "
        + _eta_words(eta, "full"),
        time_to_exhaustion_s=eta,
        figures={
            "gpu_index": float(index),
            "leak_mib_per_s": rate_mib,
            "rise_mib": leak.rise / MIB,
            "used_pct": 100 * level / total,
            "budget_pct": 100 * util,
            "above_budget_mib": (level - util * total) / MIB,
            "trend_z": leak.trend.z,
            "points": float(leak.points),
        },
    )


def _gpu_memory(w: Window, start: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Return times, used bytes and total bytes of the GPU that gained the most since `start`,
    and its index. Without per-GPU data (a window built from series only), all GPUs summed."""
    t = w.t[start:]
    counts = series(w, "gpu_count")[start:]
    # One GPU (the common case): its series is the sum; no need to read every checkpoint again.
    single = len(counts) == 0 or not np.nanmax(counts, initial=0.0) > 1
    used, total = np.zeros((0, 0)), np.zeros((0, 0))
    if not single and len(w.checkpoints) == len(w.t):
        memory = gpu_memories(w, start)
        used, total = padded([u for u, _ in memory]), padded([size for _, size in memory])
    if used.size == 0:
        return t, series(w, "gpu_mem_used_bytes")[start:], newest(w, "gpu_mem_total_bytes"), 0
    gained = _gain_share(used, total)
    best = int(np.argmax(gained))
    totals = total[:, best][~np.isnan(total[:, best])]
    return t, used[:, best], float(totals[-1]) if len(totals) else math.nan, best


def _gain_share(used: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Return each GPU's gain over the run (last quarter's median minus the first's), as a
    share of its total; -inf for GPUs without data, so they are never picked."""
    quarter = max(len(used) // 4, 1)
    with np.errstate(all="ignore"):
        early = _nanmedian_columns(used[:quarter])
        late = _nanmedian_columns(used[-quarter:])
        share = (late - early) / _nanmedian_columns(total)
    gain: np.ndarray = np.nan_to_num(share, nan=-math.inf)
    return gain


def _nanmedian_columns(x: np.ndarray) -> np.ndarray:
    """Return each column's median over its numbers (NaN for an empty column, no warning)."""
    out = np.full(x.shape[1], math.nan)
    for j in range(x.shape[1]):
        column = x[:, j][~np.isnan(x[:, j])]
        if len(column):
            out[j] = median(column)
    return out


def _gpu_memory_utilization(w: Window) -> float:
    """Return vLLM's gpu_memory_utilization as the newest checkpoint knows it."""
    for cp in reversed(w.checkpoints):
        cache = obj(obj(cp.get("vllm")).get("cache"))
        value = cache.get("gpu_memory_utilization") or obj(cp.get("engine_args")).get(
            "gpu_memory_utilization"
        )
        if isinstance(value, int | float) and 0 < value <= 1:
            return float(value)
    return DEFAULT_GPU_MEMORY_UTILIZATION


def host_memory_leak(
    w: Window,
    now: float,
    limit_bytes: float | None = None,
    lookback_s: float = LEAK_LOOKBACK_S,
) -> Finding | None:
    """Return a finding when the vLLM process tree's resident memory rises steadily, with the
    time until the machine has none left: its limit is `limit_bytes`, else what it holds now
    plus what the machine still has available (RAM, or the container's cgroup limit)."""
    t, rss = recent(w, "process_rss_bytes", lookback_s)
    if len(rss) == 0:
        return None
    leak = _leak(t, rss, min_rise=0.01 * median(rss))
    if leak is None:
        return None
    if limit_bytes is None:
        available = newest(w, "host_mem_available_bytes")
        limit_bytes = None if math.isnan(available) else float(rss[-1]) + available
    eta = _eta_to(leak.trend, limit_bytes, now)
    rate_mib = leak.trend.slope / MIB
    level = leak.trend.value_at(max(now, leak.trend.t_ref))
    figures = {
        "leak_mib_per_s": rate_mib,
        "rise_mib": leak.rise / MIB,
        "rss_mib": level / MIB,
        "trend_z": leak.trend.z,
        "points": float(leak.points),
    }
    if limit_bytes is not None:
        figures["limit_mib"] = limit_bytes / MIB
    return Finding(
        what="host_memory_leak",
        failure_type="system_resource",
        severity=severity_for(eta),
        summary=f"vLLM's resident memory rising {rate_mib:.1f} MiB/s, now {level / MIB:.0f} MiB; "
        + _eta_words(eta, "at the host's limit"),
        time_to_exhaustion_s=eta,
        figures=figures,
    )


def host_memory_exhaustion(
    w: Window, now: float, lookback_s: float = LEAK_LOOKBACK_S
) -> Finding | None:
    """Return a finding when the machine's available memory falls steadily (whoever takes it:
    a co-located process, a growing tmpfs), with the time until none is left, or when little
    is left already: the kernel's OOM killer then picks the largest process, vLLM."""
    t, available = recent(w, "host_mem_available_bytes", lookback_s)
    total = newest(w, "host_mem_total_bytes")
    low = min(HOST_MEMORY_LOW_SHARE * total, HOST_MEMORY_LOW_BYTES)
    fall = max(MIN_HOST_MEMORY_FALL_SHARE * total, MIN_HOST_MEMORY_FALL)
    out = _running_out(t, available, total, fall, low, now)
    if out is None:
        return None
    return Finding(
        what="host_memory_exhaustion",
        failure_type="system_resource",
        severity=out.severity,
        summary=f"{_gib(out.left)} of the machine's {_gib(total)} memory available"
        + (f", falling {out.rate / MIB:.1f} MiB/s" if out.falling else ", little left")
        + ("; " + _eta_words(out.eta, "none left") if out.eta is not None else ""),
        time_to_exhaustion_s=out.eta,
        figures={
            "available_gib": out.left / 1024.0**3,
            "total_gib": total / 1024.0**3,
            "falling_mib_per_s": out.rate / MIB,
        },
    )


@dataclass(frozen=True, slots=True)
class _RunningOut:
    left: float  # the newest reading
    falling: bool  # steadily (the leak test)
    rate: float  # units a second, 0 when not falling
    eta: float | None  # seconds until none is left
    severity: str


def _running_out(
    t: np.ndarray, left: np.ndarray, total: float, min_fall: float, low: float, now: float
) -> _RunningOut | None:
    """Return how a resource whose free amount is `left` (NaN where missing) runs out: falling
    steadily by more than `min_fall` (the leak test, on the amount taken), or at `low` or
    under already. Nearly gone and not falling is a warning: anything that needs more fails,
    nothing says when."""
    ok = ~np.isnan(left)
    if not ok.any() or math.isnan(left[-1]) or not total > 0:
        return None
    leak = _leak(t[ok], -left[ok], min_fall)
    level = float(left[-1])
    if leak is None and level > low:
        return None
    eta = _eta_to(leak.trend, 0.0, now) if leak is not None else None
    if level <= 0:
        eta = 0.0
    severity = severity_for(eta) if eta is not None else "warning"
    rate = leak.trend.slope if leak is not None else 0.0
    return _RunningOut(level, leak is not None, rate, eta, severity)


def fd_exhaustion(
    w: Window, now: float, fd_limit: float | None = None, lookback_s: float = LEAK_LOOKBACK_S
) -> Finding | None:
    """Return a finding when open file descriptors leak, or sit near the limit.

    The limit is `fd_limit`, else the API server's RLIMIT_NOFILE from the checkpoint. The
    count is the whole process tree's, against one process's limit: it errs early, not late.
    """
    limit = fd_limit if fd_limit is not None else _max_fds(w)
    t, fds = recent(w, "process_open_fds", lookback_s)
    if len(fds) == 0:
        return None
    level = float(fds[-1])
    near = limit is not None and level >= FD_HIGH_SHARE * limit
    leak = _leak(t, fds, min_rise=MIN_FD_RISE)
    if leak is None and not near:
        return None
    eta = _eta_to(leak.trend, limit, now) if leak is not None else None
    if limit is not None and level >= limit:
        eta = 0.0
    severity = "critical" if near else severity_for(eta)
    rate = leak.trend.slope if leak is not None else 0.0
    figures = {"open_fds": level, "fds_per_s": rate}
    if limit is not None:
        figures["limit_fds"] = limit
    return Finding(
        what="fd_exhaustion",
        failure_type="system_resource",
        severity=severity,
        summary=f"{level:.0f} open file descriptors"
        + (f" of {limit:.0f}" if limit is not None else "")
        + (f", rising {rate:.2f}/s" if leak is not None else "")
        + "; "
        + _eta_words(eta, "at the limit"),
        time_to_exhaustion_s=eta,
        figures=figures,
    )


def disk_exhaustion(w: Window, now: float, lookback_s: float = LEAK_LOOKBACK_S) -> Finding | None:
    """Return the finding of the watched filesystem that runs out of space first: its free
    space falling steadily (the leak test, on the space taken), with the time until none is
    left, or nearly none left already. A cache that is emptied and refilled is no trend.

    Full, vLLM fails where it writes: compiled graphs and downloads on the caches' disk,
    tensor-parallel workers' shared memory on /dev/shm (reference: "Disk full" under model
    load errors, /dev/shm too small under NCCL init).
    """
    if not w.checkpoints:
        return None
    t, paths, free, total = disk_free_series(w, lookback_s)
    found = [f for i, path in enumerate(paths) if (f := _disk(t, free[:, i], total[i], path, now))]
    return min(found, key=lambda f: (SEVERITY_ORDER[f.severity], _eta_key(f)), default=None)


def _disk(t: np.ndarray, free: np.ndarray, total: float, path: str, now: float) -> Finding | None:
    low = min(DISK_LOW_SHARE * total, DISK_LOW_BYTES)
    fill = max(MIN_DISK_FILL_SHARE * total, MIN_DISK_FILL_BYTES)
    out = _running_out(t, free, total, fill, low, now)
    if out is None:
        return None
    return Finding(
        what="disk_exhaustion",
        failure_type="system_resource",
        severity=out.severity,
        summary=f"{path}: {_gib(out.left)} free of {_gib(total)}"
        + (f", filling {out.rate / MIB:.1f} MiB/s" if out.falling else ", nearly full")
        + ("; " + _eta_words(out.eta, "full") if out.eta is not None else ""),
        time_to_exhaustion_s=out.eta,
        figures={
            "free_gib": out.left / 1024.0**3,
            "total_gib": total / 1024.0**3,
            "fill_mib_per_s": out.rate / MIB,
        },
    )


def disk_free_series(
    w: Window, lookback_s: float
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray, np.ndarray]:
    """Return the times over the lookback, the newest checkpoint's filesystems, their free
    bytes at each time (rows x filesystems, NaN where a checkpoint does not have one) and
    their newest sizes."""
    first = int(np.searchsorted(w.t, w.t[-1] - lookback_s))
    rows = w.cache.get("rows")
    if rows is not None:  # read once per checkpoint (learning.window.row)
        listed = [(r.disk_paths, r.disk_free) for r in rows[first:]]
        paths, total = rows[-1].disk_paths, rows[-1].disk_total
    else:
        space = [disk_space(cp) for cp in w.checkpoints[first:]]
        listed = [(p, f) for p, f, _ in space]
        paths, _, total = space[-1]
    if all(p == paths for p, _ in listed):  # the same filesystems all along: the common case
        free = np.array([f for _, f in listed], dtype=float).reshape(len(listed), len(paths))
    else:
        free = np.full((len(listed), len(paths)), math.nan)
        for i, (p, f) in enumerate(listed):
            for j, path in enumerate(paths):
                if path in p:
                    free[i, j] = f[p.index(path)]
    return w.t[first:], paths, free, np.array(total, dtype=float)


def _gib(n: float) -> str:
    return f"{n / 1024.0**3:.1f} GiB"


def _max_fds(w: Window) -> float | None:
    for cp in reversed(w.checkpoints):
        value = obj(obj(cp.get("vllm")).get("api_server")).get("max_fds")
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return None


# KV cache and queue --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pressure:
    queue: Trend
    queue_growing: bool
    preempting: bool
    waiting: float  # the newest count


def _pressure(w: Window, lookback_s: float) -> _Pressure:
    """Return whether the queue grows and requests are being preempted, recently (worked out
    once per window: the KV and the queue detectors both ask)."""
    key = ("pressure", lookback_s)
    if key not in w.cache:
        w.cache[key] = _read_pressure(w, lookback_s)
    pressure: _Pressure = w.cache[key]
    return pressure


def _read_pressure(w: Window, lookback_s: float) -> _Pressure:
    t, waiting = recent(w, "requests_waiting", lookback_s)
    queue = trend(t, waiting)
    queued = float(waiting[-1]) if len(waiting) else 0.0
    rise = queue.slope * queue.span_s
    # A queue that has emptied again is not growing, whatever the minutes before it did.
    growing = queue.z >= QUEUE_Z and rise >= MIN_QUEUE_RISE and queued >= MIN_QUEUE_RISE
    _, preemptions = recent(w, "preemptions_per_s", lookback_s)
    # Only whether there were preemptions, not how many per second: the rate's clock can be
    # off (a simulated agent's), the fact is not.
    preempting = len(preemptions) > 0 and float((preemptions > 0).mean()) >= PREEMPTING_SHARE
    return _Pressure(queue, bool(growing), preempting, queued)


def _sustained_rise(w: Window, metric: str, span_s: float, step: float = 2.0) -> bool:
    """True when each quarter of the last `span_s` sits at least `step` above the one before."""
    t, values = recent(w, metric, span_s)
    if len(t) < 8 or t[-1] - t[0] < 0.75 * span_s:
        return False
    return bool((quarter_rises(values) >= step).all())


def kv_cache_exhaustion(w: Window, now: float, lookback_s: float = KV_LOOKBACK_S) -> Finding | None:
    """Return a finding when the KV cache is full and thrashing, or heading to 100 %.

    Full (>= KV_FULL_PCT) is only exhaustion with pressure: a growing queue or preemptions.
    A rise toward 100 % is reported with pressure when it arrives within WARNING_S, and
    without pressure only as a note (info): within KV_SUSTAINED_S when the rise has lasted
    minutes, else within KV_EARLY_S. Load swings move the cache by tens of percent in minutes
    on a healthy host, and whether a rise ends full is a coin toss (see below).
    """
    if newest(w, "forward_progress") == 0.0:
        return None  # a stalled engine holds its cache still: a hang, not KV (queue_growth)
    model = local_trend(w, "kv_cache_usage_pct", lookback_s)
    if model is None:
        return None
    lead = max(now - model.t_ref, 0.0)
    level = min(max(float(model.value(lead)), 0.0), KV_LIMIT_PCT)
    pressure = _pressure(w, lookback_s)
    under_pressure = pressure.queue_growing or pressure.preempting
    eta = _eta_after(model.time_to(KV_LIMIT_PCT), lead)
    if level >= KV_FULL_PCT and under_pressure:
        eta, severity = 0.0, "critical"
    elif eta is not None and model.slope > 0 and under_pressure and eta <= WARNING_S:
        severity = severity_for(eta)
    elif (
        eta is not None
        and model.slope > 0
        and eta <= KV_SUSTAINED_S
        and _sustained_rise(w, "kv_cache_usage_pct", 2 * lookback_s)
    ):
        # Not a warning: as one it opened 39 more alarms on the simulator's load spikes
        # (training seeds, 20 host-hours), 31 of them false, and none earlier on the
        # demand ramps (kv_cache_exhaustion). Demand that outgrows the cache is kv_cache_demand's.
        severity = "info"
    elif eta is not None and model.slope > 0 and eta <= KV_EARLY_S:
        # A load spike lifts the cache as fast for a few seconds and mostly stops short of it.
        severity = "info"
    else:
        return None
    return Finding(
        what="kv_cache_exhaustion",
        failure_type="kv_cache_exhausted",
        severity=severity,
        summary=f"KV cache {level:.0f} % ({60 * model.slope:+.1f} %/min), "
        f"{pressure.waiting:.0f} waiting"
        + (", queue growing" if pressure.queue_growing else "")
        + (", preempting" if pressure.preempting else "")
        + "; "
        + _eta_words(eta, "full"),
        time_to_exhaustion_s=eta,
        figures={
            "kv_cache_usage_pct": level,
            "kv_pct_per_s": model.slope,
            "requests_waiting": pressure.waiting,
            "waiting_per_s": pressure.queue.slope,
            "queue_growing": float(pressure.queue_growing),
            "preempting": float(pressure.preempting),
        },
    )


def kv_cache_demand(w: Window, now: float) -> Finding | None:
    """Return a finding when requests get longer and the KV cache fills up with them, and
    have done so at every checkpoint of the last DEMAND_PERSIST_S (see _demand)."""
    found = _demand(w, now)
    if found is None:
        return None
    # The checkpoints of the last DEMAND_PERSIST_S, and at least the one before (slow polls).
    first = min(int(np.searchsorted(w.t, w.t[-1] - DEMAND_PERSIST_S)), len(w) - 2)
    if first < 0:
        return None
    for i in range(first, len(w) - 1):
        if _demand(w.upto(i), float(w.t[i])) is None:
            return None
    return found


def _demand(w: Window, now: float) -> Finding | None:
    """Return a finding when requests get longer and the KV cache fills up with them.

    A load spike fills the cache with more requests of the usual length, and mostly stops
    short of full as soon as the server keeps up again. When each request needs more tokens
    (longer answers and prompts: agentic or long-context traffic), every running sequence
    holds more of the cache and stays longer, so the cache keeps filling until it is full.

    1. The cache's use over DEMAND_KV_LOOKBACK_S, fitted in log space (the growth compounds:
       more tokens per request and more requests running at once): how fast it grows, and
       when the line reaches 100 %.
    2. The mean tokens generated per request in the newest LENGTH_STEP_S, from the counters
       (learning.detectors._request_lengths), against the host's usual mean: how much longer
       requests are now.
    3. A finding when the cache grows by MIN_KV_LOG_SLOPE a second or more, requests are
       MIN_LENGTH_GROWTH times their usual length, the line reaches full within DEMAND_ETA_S,
       and the newest reading is not far under the line (DEMAND_BELOW_FIT: the rise goes on).
    """
    if newest(w, "forward_progress") == 0.0:
        return None
    t, kv = recent(w, "kv_cache_usage_pct", DEMAND_KV_LOOKBACK_S)
    if len(t) < MIN_DEMAND_KV_POINTS:
        return None
    log_slope, log_level = _line(t - now, np.log(np.maximum(kv, 1.0)))
    if not log_slope >= MIN_KV_LOG_SLOPE:
        return None
    eta = max((math.log(KV_LIMIT_PCT) - log_level) / log_slope, 0.0)
    level = min(math.exp(log_level), KV_LIMIT_PCT)
    if eta > DEMAND_ETA_S or level < DEMAND_MIN_KV_PCT or kv[-1] < DEMAND_BELOW_FIT * level:
        return None
    growth = _length_growth(w)
    if not growth >= MIN_LENGTH_GROWTH:
        return None
    # The requests that finished are not longer than usual: more of them run at once (a spike).
    if _length_growth(w, finished_only=True) < MIN_FINISHED_GROWTH:
        return None
    return Finding(
        what="kv_cache_demand",
        failure_type="kv_cache_exhausted",
        severity=severity_for(eta),
        summary=f"KV cache {level:.0f} % and growing {100 * log_slope:.1f} % of itself a "
        f"second with requests {growth:.1f}x their usual length; " + _eta_words(eta, "full"),
        time_to_exhaustion_s=eta,
        figures={
            "kv_cache_usage_pct": level,
            "kv_growth_per_s": log_slope,
            "request_length_growth": growth,
        },
    )


def _length_growth(w: Window, finished_only: bool = False) -> float:
    """Return the newest step's mean request length over the host's usual one (the median of
    the steps that ended LENGTH_BASELINE_S before it); NaN when it cannot be told."""
    t, lengths = _request_lengths(w, finished_only)
    if len(t) == 0 or t[-1] != w.t[-1]:
        return math.nan
    newest_gap, oldest_gap = LENGTH_BASELINE_S
    usual = lengths[(t >= t[-1] - oldest_gap) & (t <= t[-1] - newest_gap)]
    if len(usual) < MIN_BASELINE_STEPS:
        return math.nan
    return float(lengths[-1]) / median(usual)


def _request_lengths(w: Window, finished_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return the times and mean tokens generated per request over each LENGTH_STEP_S, in the
    current run's last LENGTH_BASELINE_S, from its first minute on (WARM_UP_S).

    By default from the token and request counters: the tokens generated in a step belong to
    the requests that finished in it and to those still running, so it moves as soon as
    answers lengthen. When more are running at a step's end than at its start, the
    newcomers are on average half-way through their answers: they count as half a request
    each, or a load spike (more requests of the usual length) would look like longer
    requests. It still does, a little.

    `finished_only`: from vLLM's output-length histogram (sum and count), the exact mean of
    the requests that finished in each step; it lags (a request finishes after its answer)
    but no load spike moves it. Empty when the checkpoints do not carry it.
    """
    start = current_run_start(w)
    t = w.t[start:]
    now = np.flatnonzero(t >= t[-1] - LENGTH_BASELINE_S[1])
    then = np.searchsorted(t, t[now] - LENGTH_STEP_S, side="right") - 1
    settled = then >= 0
    settled[settled] = t[then[settled]] >= t[0] + WARM_UP_S
    now, then = now[settled], then[settled]
    if finished_only:
        tokens_total = series(w, "finished_output_tokens_total")[start:]
        counted = series(w, "finished_output_requests_total")[start:]
        tokens = tokens_total[now] - tokens_total[then]
        requests = counted[now] - counted[then]
    else:
        generated = series(w, "generation_tokens_total")[start:]
        finished = series(w, "requests_finished_total")[start:]
        running = series(w, "requests_running")[start:]
        tokens = generated[now] - generated[then]
        requests = (
            finished[now] - finished[then] + 0.5 * np.maximum(running[now] - running[then], 0)
        )
    with np.errstate(invalid="ignore"):
        ok = (tokens >= 0) & (requests >= MIN_LENGTH_REQUESTS)  # NaN and counter resets fail
    return t[now][ok], tokens[ok] / requests[ok]


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Return the least-squares slope of `y` over `x` and its value at x = 0."""
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx <= 0:
        return math.nan, math.nan
    slope = float(dx @ (y - y.mean())) / sxx
    return slope, float(y.mean() - slope * x.mean())


def _eta_after(lead_to_limit: float | None, lead_now: float) -> float | None:
    """Return the seconds from now to a limit the trend reaches `lead_to_limit` after its
    newest point, `lead_now` seconds ago."""
    return None if lead_to_limit is None else max(float(lead_to_limit - lead_now), 0.0)


def queue_growth(
    w: Window, now: float, lookback_s: float = KV_LOOKBACK_S, waiting_limit: float | None = None
) -> Finding | None:
    """Return a finding when the waiting queue grows while the running count stays flat: the
    server takes no more work (KV cache full, or the engine stalled) and arrivals pile up.

    The time to exhaustion needs `waiting_limit` (how long a queue is too long); the finding
    is critical when the engine makes no progress at all (a hang).
    """
    pressure = _pressure(w, lookback_s)
    if not pressure.queue_growing:
        return None
    # The plateau is judged on the newer half: a restart's ramp earlier in the lookback
    # says nothing about whether the server takes work now.
    t, running = recent(w, "requests_running", lookback_s / 2)
    run = trend(t, running)
    typical = max(median(running), 1.0) if len(running) else 1.0
    if len(running) and abs(run.slope * run.span_s) > PLATEAU_SHARE * typical and run.z >= 2:
        return None  # running climbs with the queue: the server is still taking work
    stalled = newest(w, "forward_progress") == 0.0
    kv = newest(w, "kv_cache_usage_pct")
    eta = _eta_to(pressure.queue, waiting_limit, now)
    # What the pile-up leads to: a stall is a hang; a full cache, KV exhaustion; otherwise the
    # server is at its concurrency limit and requests just wait longer.
    cause = "hang" if stalled else "kv_cache_exhausted" if kv >= KV_HIGH_PCT else ""
    cause = cause or "performance_degradation"
    return Finding(
        what="queue_growth",
        failure_type=cause,
        severity="critical" if stalled else severity_for(eta) if eta is not None else "warning",
        summary=f"{pressure.waiting:.0f} waiting, growing {60 * pressure.queue.slope:.1f}/min "
        f"while {typical:.0f} run"
        + (" and no token is generated" if stalled else "")
        + "; "
        + _eta_words(eta, "at the queue limit"),
        time_to_exhaustion_s=eta,
        figures={
            "requests_waiting": pressure.waiting,
            "waiting_per_s": pressure.queue.slope,
            "requests_running": typical,
            "running_per_s": run.slope,
            "kv_cache_usage_pct": kv,
            "forward_progress": newest(w, "forward_progress"),
        },
    )


# Temperature ---------------------------------------------------------------------------------


def thermal(
    w: Window, now: float, slowdown_c: float = SLOWDOWN_C, lookback_s: float = THERMAL_LOOKBACK_S
) -> Finding | None:
    """Return a finding when the hottest GPU throttles, heads for `slowdown_c`, or runs within
    THERMAL_MARGIN_C of it. The projection is the current rise's (_heating)."""
    hottest = newest(w, "gpu_temp_c")
    if math.isnan(hottest):
        return None
    throttled = newest(w, "gpu_throttled") == 1.0
    heating = _heating(*recent(w, "gpu_temp_c", lookback_s), slowdown_c)
    eta = heating.eta_s if heating is not None else None
    if throttled or hottest >= slowdown_c:
        eta, severity = 0.0, "critical"
    elif eta is not None and eta <= WARNING_S:
        severity = severity_for(eta)
    elif hottest >= slowdown_c - THERMAL_MARGIN_C:
        eta, severity = None, "info"
    else:
        return None
    rate = heating.rate if heating is not None else 0.0
    return Finding(
        what="thermal",
        failure_type="thermal_throttling",
        severity=severity,
        summary=f"GPU at {hottest:.0f} C ({60 * rate:+.1f} C/min)"
        + (", clocks throttled" if throttled else "")
        + "; "
        + _eta_words(eta, f"at the {slowdown_c:.0f} C slowdown point"),
        time_to_exhaustion_s=eta,
        figures={
            "gpu_temp_c": hottest,
            "temp_c_per_s": rate,
            "slowdown_c": slowdown_c,
            "throttled": float(throttled),
        },
    )


@dataclass(frozen=True, slots=True)
class _Heating:
    rate: float  # C/s over the newest RISE_RATE_S
    level: float  # the level it heads for (Newton's law); inf when its rate does not fall
    eta_s: float  # until `slowdown_c`


def _heating(t: np.ndarray, y: np.ndarray, slowdown_c: float) -> _Heating | None:
    """Return when the current rise of the temperature `y` reaches `slowdown_c`, or None when
    it is not rising, has not risen for long enough to tell whether it bends, or levels off
    below it.

    The rise is what came after the lowest reading of the lookback: a long trend fitted over
    minutes of steady readings calls a rise of the last minute noise, and one fitted across a
    cooling and a warming averages the two. Heat follows Newton's law, dy/dt = k (y_inf - y):
    a line of the rise's rate against its level reaches zero at the level it heads for, y_inf
    (_newton). A GPU warming up after a start or a load heads for a level under the slowdown
    point, however fast it begins; one whose cooling fails heads past it, or keeps its rate
    (a cooling that keeps failing), and is projected along the exponential or its rate, but
    no further ahead than RISE_TRUST times as long as the rise has kept its pace: a load that
    warms the GPU a few degrees at 6 C/min is not on its way to the slowdown point.
    """
    if len(y) == 0:
        return None
    # The rise begins at the last reading within a degree of the lowest (whole degrees).
    start = int(np.flatnonzero(y <= y.min() + 1.0)[-1])
    t, y = t[start:], y[start:]
    now_c = float(y[-1])
    if y[-1] - y[0] < MIN_RISE_C or t[-1] - t[0] < MIN_RISE_S:
        return None
    fit = _newton(t, y)
    if fit is None:
        return None
    level, k = fit
    newest = min(int(np.searchsorted(t, t[-1] - RISE_RATE_S)), len(t) - 3)  # 3 at slow polls
    rate = trend(t[newest:], y[newest:]).slope if newest >= 0 else math.nan
    if not rate > 0 or level < slowdown_c:
        return None
    eta = (slowdown_c - now_c) / rate  # at its present pace
    if math.isfinite(level):  # slowing toward `level`: no sooner than at its present pace
        slowing = (
            math.log((level - now_c) / (level - slowdown_c)) / k if level > slowdown_c else math.inf
        )
        eta = max(eta, slowing)
    if eta > RISE_TRUST * _sustained_s(t, y, rate):
        return None  # projected further ahead than the rise has kept its pace
    return _Heating(rate, level, max(eta, 0.0))


def _sustained_s(t: np.ndarray, y: np.ndarray, rate: float) -> float:
    """Return for how long `y` has risen at least at SUSTAINED_SHARE of `rate`, in
    HEATING_STEP_S steps back from its newest reading."""
    at = np.searchsorted(t, t[-1] - HEATING_STEP_S * np.arange(1, len(t) + 1))
    span, newer = 0.0, len(t) - 1
    for older in at.tolist():
        if older >= newer or t[newer] - t[older] <= 0:
            break
        if (y[newer] - y[older]) / (t[newer] - t[older]) < SUSTAINED_SHARE * rate:
            break
        span, newer = t[-1] - t[older], older
    return span


def _newton(t: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Return the level `y` heads for under Newton's law of heating, dy/dt = k (y_inf - y), and
    k: a line of its rate (over HEATING_STEP_S) against its level, where the rate reaches 0.
    (inf, 0) when the rate does not fall as the level rises; None with too few points."""
    before = np.searchsorted(t, t - HEATING_STEP_S, side="right") - 1
    pairs = np.flatnonzero(before >= 0)
    if len(pairs) < MIN_HEATING_PAIRS:
        return None
    then = before[pairs]
    rate = (y[pairs] - y[then]) / (t[pairs] - t[then])
    slope, at_zero = _line((y[pairs] + y[then]) / 2, rate)
    return (-at_zero / slope, -slope) if slope < 0 else (math.inf, 0.0)


# Performance degradation ---------------------------------------------------------------------


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


# Words ---------------------------------------------------------------------------------------


def _eta_words(eta_s: float | None, limit: str) -> str:
    if eta_s is None:
        return "no limit in sight"
    if eta_s <= 0:
        return f"{limit} now"
    if eta_s < 120:
        return f"{limit} in ~{eta_s:.0f} s"
    if eta_s < 7200:
        return f"{limit} in ~{eta_s / 60:.0f} min"
    return f"{limit} in ~{eta_s / 3600:.1f} h"
