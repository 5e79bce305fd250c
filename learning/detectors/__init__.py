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

One module per kind: resources (leaks, memory, file descriptors, disks), kv_cache (the cache
and the queue), thermal, degradation; finding holds what they return.
"""

from __future__ import annotations

from learning.detectors.degradation import performance_degradation
from learning.detectors.finding import CRITICAL_S, WARNING_S, Finding, severity_for, urgency
from learning.detectors.kv_cache import kv_cache_demand, kv_cache_exhaustion, queue_growth
from learning.detectors.resources import (
    disk_exhaustion,
    disk_free_series,
    fd_exhaustion,
    gpu_memory_leak,
    host_memory_exhaustion,
    host_memory_leak,
)
from learning.detectors.thermal import SLOWDOWN_C, thermal
from learning.window import Window

__all__ = [
    "CRITICAL_S",
    "SLOWDOWN_C",
    "WARNING_S",
    "Finding",
    "detect",
    "disk_exhaustion",
    "disk_free_series",
    "fd_exhaustion",
    "gpu_memory_leak",
    "host_memory_exhaustion",
    "host_memory_leak",
    "kv_cache_demand",
    "kv_cache_exhaustion",
    "performance_degradation",
    "queue_growth",
    "severity_for",
    "thermal",
]


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
    return sorted((f for f in findings if f is not None), key=urgency)
