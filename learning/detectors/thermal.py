"""GPUs heating towards their slowdown temperature, or throttled already. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from learning.detectors.finding import (
    WARNING_S,
    Finding,
    eta_words,
    severity_for,
)
from learning.forecast import newest, recent
from learning.robust import (
    least_squares,
    trend,
)
from learning.window import Window

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
        + eta_words(eta, f"at the {slowdown_c:.0f} C slowdown point"),
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
    slope, at_zero = least_squares((y[pairs] + y[then]) / 2, rate)
    return (-at_zero / slope, -slope) if slope < 0 else (math.inf, 0.0)
