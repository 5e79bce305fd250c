"""The KV cache and the queue: a cache full and thrashing or heading there, requests getting
longer than the cache holds, and a waiting queue piling up. Pure.

A full KV cache is only exhaustion when the queue grows or requests are preempted;
saturation is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from learning.detectors.finding import (
    WARNING_S,
    Finding,
    eta_to,
    eta_words,
    severity_for,
)
from learning.forecast import current_run_start, local_trend, newest, recent, series
from learning.prediction import DEFAULT_HORIZON_S
from learning.robust import (
    Trend,
    least_squares,
    median,
    quarter_rises,
    trend,
)
from learning.window import Window

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
        + eta_words(eta, "full"),
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
       (_request_lengths), against the host's usual mean: how much longer
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
    log_slope, log_level = least_squares(t - now, np.log(np.maximum(kv, 1.0)))
    if not log_slope >= MIN_KV_LOG_SLOPE:
        return None
    eta = max((math.log(KV_LIMIT_PCT) - log_level) / log_slope, 0.0)
    # The line's value now, which may be long after the newest checkpoint: capped before exp.
    level = math.exp(min(log_level, math.log(KV_LIMIT_PCT)))
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
        f"second with requests {growth:.1f}x their usual length; " + eta_words(eta, "full"),
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
    eta = eta_to(pressure.queue, waiting_limit, now)
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
        + eta_words(eta, "at the queue limit"),
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
