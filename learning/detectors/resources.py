"""Resources running out: GPU and host memory leaks, host memory, file descriptors, disks. Pure.

A leak is a consistent rise (Mann-Kendall), not one jump (quarter medians, largest step), in
the current run; its time to the limit is read on its trend line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from learning.detectors.finding import (
    Finding,
    eta_to,
    eta_words,
    severity_for,
    urgency,
)
from learning.forecast import current_run_start, newest, recent, series
from learning.robust import (
    Trend,
    floats,
    median,
    quarter_rises,
    scale_of,
    trend_of,
)
from learning.window import Window, disk_space, gpu_memories, obj, padded

# Leaks (GPU memory, host memory, file descriptors)
LEAK_LOOKBACK_S = 3600.0
MIN_LEAK_POINTS = 8
LEAK_Z = 3.0  # Mann-Kendall z a leak's rise must reach
MAX_STEP_SHARE = 0.5  # one step carrying more than this share of the rise is a step, not a leak
MIN_GPU_LEAK_SHARE = 0.002  # a GPU leak must have grown by 0.2 % of the GPU's memory
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default, when the checkpoint does not say
MIB = 1024.0**2

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
    eta = eta_to(leak.trend, total, now)
    util = _gpu_memory_utilization(w)
    level = min(leak.trend.value_at(max(now, leak.trend.t_ref)), total)
    rate_mib = leak.trend.slope / MIB
    return Finding(
        what="gpu_memory_leak",
        failure_type="cuda_oom",
        severity=severity_for(eta),
        summary=f"GPU {index} memory rising {rate_mib:.1f} MiB/s, "
        f"{100 * level / total:.1f} % of its total (vLLM's budget {100 * util:.0f} %); "
        + eta_words(eta, "full"),
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
    eta = eta_to(leak.trend, limit_bytes, now)
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
        + eta_words(eta, "at the host's limit"),
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
        + ("; " + eta_words(out.eta, "none left") if out.eta is not None else ""),
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
    eta = eta_to(leak.trend, 0.0, now) if leak is not None else None
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
    eta = eta_to(leak.trend, limit, now) if leak is not None else None
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
        + eta_words(eta, "at the limit"),
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
    return min(found, key=urgency, default=None)


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
        + ("; " + eta_words(out.eta, "full") if out.eta is not None else ""),
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
