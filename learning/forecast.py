"""Metric forecasts: where a series is heading, how sure, and when it crosses a threshold. Pure.

The model is a robust local trend (learning/robust.py) over the last few minutes of the
host's current run, damped so that it never extrapolates nonsense:

- a steady trend is trusted for as long as it was observed, then fades;
- a trend that is levelling off (the recent half rising clearly slower than the older half,
  as a GPU warming up does) is projected as an exponential approach to its asymptote;
- a trend that has just started, sped up or turned (the recent half's slope clearly different,
  and not a levelling-off) is taken from the recent half alone;
- a slope that is not consistently up or down (Mann-Kendall) is shrunk toward flat.

The band (about 90 %) holds two answers to "where will it be": on the trend, within the
prediction interval of a straight-line fit (the number of points discounted for autocorrelated
residuals, so it widens with the lead time); or wherever the series wanders from its newest
value, as far as it wandered over the same spans in its own recent past (the residuals'
variogram). Load-driven series (KV cache, queue, latency) swing in bursts that a line through
minutes does not foresee: on the simulator's runs the line's interval alone held 47-85 % of
what they were 30-300 s later, both together 84-94 % (`evaluate/forecasts`). Values are kept
inside what the metric can be (0-100 for a percentage).

Two baselines sit beside it for the evaluation: a fixed-threshold alarm and Prometheus'
`predict_linear`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from numba import njit

from learning.prediction import DEFAULT_HORIZON_S, Forecast
from learning.robust import Trend, clean, floats, halves
from learning.window import Window

LOOKBACK_S = 300.0
STEPS = 10  # projected points per forecast
MIN_POINTS = 5  # fewer and there is no forecast
BAND_Z = 1.645  # two-sided 90 %
Z_NO_TREND = 1.0  # Mann-Kendall |z| at or below this: no trend at all
Z_FULL_TREND = 2.5  # at or above this: the whole slope
DECELERATING = 0.6  # recent-half slope below this share of the older half's: levelling off
CURVE_Z = 3.0  # a change of slope between the halves must be this many standard errors
MIN_SLOPE_RATIO = 0.05  # the fastest levelling-off the model assumes

# States in which the series belong to one run of the server. Anything else (starting, failed,
# stopped) resets memory, KV cache and queue, so a trend never reaches back across it.
RUN_STATES = frozenset({"serving", "degraded", "draining", "unknown"})

# Thresholds an operator would put on each key series when none are given: name -> value.
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "kv_cache_usage_pct": {"kv_cache_high": 90.0, "kv_cache_full": 99.0},
    "gpu_mem_used_pct": {"gpu_mem_high": 97.0, "gpu_mem_full": 99.5},
    "requests_waiting": {"queue_long": 50.0},
    "itl_p99_s": {"itl_slow": 0.2},
    "ttft_p99_s": {"ttft_slow": 2.0},
    "gpu_temp_c": {"thermal_slowdown": 87.0},
}


class LocalTrend(NamedTuple):
    """A damped trend: value(h) = level + slope x g(h), h seconds after `t_ref`.

    g(h) is h up to `onset_s`, then rises by at most `tau_s` more, exponentially. A named
    tuple, not a dataclass: the compiled fit builds them.
    """

    level: float
    slope: float  # per second, at t_ref, after shrinking an inconsistent one
    t_ref: float  # the newest point's time
    onset_s: float
    tau_s: float
    regime: str  # "steady", "levelling_off", "changed", "flat"
    sigma: float  # robust sigma of the residuals
    n_eff: float  # points, discounted for autocorrelation
    t_offset_s: float  # t_ref minus the mean time of the points the line was fitted on
    sxx: float  # sum of squared time deviations of those points (s^2)

    def value(self, h: float) -> float:
        """Return the trend's value `h` seconds after t_ref."""
        return self.level + self.slope * _elapsed(float(h), self.onset_s, self.tau_s)

    def path(
        self, h: np.ndarray, low: float, high: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the values and the ~90 % band's lower and upper edges `h` seconds after
        t_ref, kept within [low, high] (_projection)."""
        return _projection(h, low, high, self.level, self.slope, self.onset_s, self.tau_s,
                           self.sigma, self.n_eff, self.t_offset_s, self.sxx)  # fmt: skip

    def time_to(self, threshold: float) -> float | None:
        """Return seconds after t_ref until the trend reaches `threshold` from below, 0 when it
        is already there, None when it never does."""
        if self.level >= threshold:
            return 0.0
        if self.slope <= 0:
            return None
        x = (threshold - self.level) / self.slope
        if x <= self.onset_s:
            return x
        rest = (x - self.onset_s) / self.tau_s
        return None if rest >= 1.0 else self.onset_s - self.tau_s * math.log1p(-rest)


def series(w: Window, name: str) -> np.ndarray:
    """Return the series `name` of `w`, all NaN when the window does not carry it (a window
    built by hand with a few series): a missing figure is never an error."""
    values = w.series.get(name)
    return values if values is not None else np.full(len(w), math.nan)


def newest(w: Window, name: str) -> float:
    """Return the newest value of series `name` in `w`, or NaN."""
    present = series(w, name)
    present = present[~np.isnan(present)]
    return float(present[-1]) if len(present) else math.nan


def current_run_start(w: Window) -> int:
    """Return the index where the newest run of `w` begins (after the last start or failure)."""
    start = w.cache.get("run_start")
    if start is None:
        states = w.states
        start = 0  # the whole window is one run: the common case, found without a loop
        if not RUN_STATES.issuperset(states):
            start = next((i + 1 for i in range(len(states) - 1, -1, -1)
                          if states[i] not in RUN_STATES), 0)  # fmt: skip
        w.cache["run_start"] = start
    return start


def recent(w: Window, metric: str, lookback_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the times and values of `metric` in the current run, within `lookback_s` of
    its newest checkpoint, NaNs dropped."""
    y = floats(series(w, metric))
    return _recent(floats(w.t), y, current_run_start(w), float(lookback_s))


# Compiled: as numpy calls (a mask, its slices, a second mask) it cost ten times as much, and
# the detectors and forecasts ask for a dozen series on every analysis.
@njit(cache=True)
def _recent(
    t: np.ndarray, y: np.ndarray, start: int, lookback_s: float
) -> tuple[np.ndarray, np.ndarray]:
    newest = len(y) - 1
    while newest >= start and math.isnan(y[newest]):
        newest -= 1
    if newest < start:
        return np.empty(0), np.empty(0)
    since = t[newest] - lookback_s
    keep = np.zeros(len(y), dtype=np.bool_)
    for i in range(start, newest + 1):
        keep[i] = t[i] >= since and not math.isnan(y[i])
    return t[keep], y[keep]


def local_trend(w: Window, metric: str, lookback_s: float) -> LocalTrend | None:
    """Return the damped local trend of `metric` over its last `lookback_s` in the current run,
    fitted once per window: a forecast and a detector asking for the same one share it."""
    key = ("local_trend", metric, lookback_s)
    if key not in w.cache:
        w.cache[key] = fit_local_trend(*recent(w, metric, lookback_s))
    model: LocalTrend | None = w.cache[key]
    return model


def fit_local_trend(t: np.ndarray, y: np.ndarray) -> LocalTrend | None:
    """Return the damped local trend of `y` over `t` (NaN-free, oldest first), or None with
    fewer than MIN_POINTS points."""
    if len(t) < MIN_POINTS:
        return None
    return _fit(floats(t), floats(y))


# The fit is compiled by numba, as learning.robust's kernels are: in numpy calls it cost
# five times as much, in their overhead more than in arithmetic.


@njit(cache=True)
def _fit(t: np.ndarray, y: np.ndarray) -> LocalTrend:
    if (y == y[0]).all():
        # A series that did not move (GPU memory between loads, an empty queue): its line is
        # flat through its value, exactly what the pairs would give, without 1,770 of them.
        flat = Trend(0.0, y[0], t[-1], 0.0, len(t), t[-1] - t[0], 0.0)
        return _linear(t, y, flat, "steady")
    whole, older, newer = halves(t, y)
    half = len(t) // 2
    regime = _regime(older, newer, t, half)
    if regime == "levelling_off":
        return _levelling_off(t[half:], y[half:], older, newer)
    if regime == "changed":
        return _linear(t[half:], y[half:], newer, "changed")
    return _linear(t, y, whole, "steady")


@njit(cache=True)
def _regime(older: Trend, newer: Trend, t: np.ndarray, half: int) -> str:
    """Return how the slope changed between the halves: "steady" unless the change is
    significant; then "levelling_off" when the newer half still goes the same way, slower;
    else "changed" (a trend that started, sped up or turned)."""
    if older.n < 3 or newer.n < 3:
        return "steady"
    se = math.hypot(_slope_se(older, t[:half]), _slope_se(newer, t[half:]))
    if abs(newer.slope - older.slope) <= CURVE_Z * se:
        return "steady"
    if older.slope != 0.0 and 0.0 <= newer.slope / older.slope < DECELERATING:
        return "levelling_off"
    return "changed"


@njit(cache=True)
def _slope_se(tr: Trend, t: np.ndarray) -> float:
    sxx = _sxx(t)
    return tr.residual_scale / math.sqrt(sxx) if sxx > 0 else math.inf


@njit(cache=True)
def _linear(t: np.ndarray, y: np.ndarray, tr: Trend, regime: str) -> LocalTrend:
    """A straight line trusted for as long as it was observed, then fading over as long again."""
    keep = _shrink(tr.z)
    span = max(tr.span_s, 1.0)
    residuals = y - (tr.level + tr.slope * (t - tr.t_ref))
    n_eff = _effective_n(residuals)
    return LocalTrend(
        level=tr.level,
        slope=tr.slope * keep,
        t_ref=tr.t_ref,
        onset_s=span,
        tau_s=span,
        regime=regime if keep > 0 else "flat",
        sigma=tr.residual_scale,
        n_eff=n_eff,
        t_offset_s=(tr.t_ref - t).mean(),
        sxx=_sxx(t) * n_eff / len(t),
    )


@njit(cache=True)
def _levelling_off(t: np.ndarray, y: np.ndarray, older: Trend, newer: Trend) -> LocalTrend:
    """An exponential approach: the slope shrinks by newer/older every `gap` seconds.

    For y = a - b exp(-t / tau) the slope at the halves' middles falls by exp(-gap / tau), so
    tau = gap / ln(older / newer), and the slope now is the newer one decayed to the last point.
    """
    ratio = max(newer.slope / older.slope, MIN_SLOPE_RATIO)
    gap = max(_middle(newer) - _middle(older), 1.0)
    tau = gap / math.log(1.0 / ratio)
    residuals = y - (newer.level + newer.slope * (t - newer.t_ref))
    n_eff = _effective_n(residuals)
    return LocalTrend(
        level=newer.level,
        slope=newer.slope * math.exp(-(newer.t_ref - _middle(newer)) / tau),
        t_ref=newer.t_ref,
        onset_s=0.0,
        tau_s=tau,
        regime="levelling_off",
        sigma=newer.residual_scale,
        n_eff=n_eff,
        t_offset_s=(newer.t_ref - t).mean(),
        sxx=_sxx(t) * n_eff / len(t),
    )


@njit(cache=True)
def _middle(tr: Trend) -> float:
    return tr.t_ref - tr.span_s / 2


@njit(cache=True)
def _shrink(z: float) -> float:
    """Return how much of a slope to keep for its Mann-Kendall z: none when its direction is
    not consistent, all of it when it clearly is."""
    return min(max((abs(z) - Z_NO_TREND) / (Z_FULL_TREND - Z_NO_TREND), 0.0), 1.0)


@njit(cache=True)
def _effective_n(residuals: np.ndarray) -> float:
    """Return the number of independent points the residuals are worth: positively
    autocorrelated residuals (a metric that wanders) carry less information than their count."""
    n = len(residuals)
    rho = _lag1(residuals)
    return max(n * (1.0 - rho) / (1.0 + rho), 2.0) if rho > 0 else float(n)


@njit(cache=True)
def _sxx(t: np.ndarray) -> float:
    d = t - t[0]  # epoch seconds are large: the deviations are taken from small numbers
    d -= d.mean()
    return float(d @ d)


@njit(cache=True)
def _lag1(x: np.ndarray) -> float:
    x = x - x.mean()
    denom = x @ x
    return (x[:-1] @ x[1:]) / denom if denom > 0 and len(x) > 2 else 0.0


@njit(cache=True)
def _t_quantile(df: float) -> float:
    """Return Student's t 95th percentile (Cornish-Fisher: within 1 % from 10 degrees of freedom,
    5 % at 4)."""
    df = max(df, 1.0)
    return BAND_Z + (BAND_Z**3 + BAND_Z) / (4.0 * df)


# The projection's kernels take the trend's figures one by one: numba reads a float argument
# in C, but a named tuple argument in Python, which cost more than the projection itself.


@njit(cache=True)
def _elapsed(h: float, onset_s: float, tau_s: float) -> float:
    """Return g(h): the lead time `h` as a trend damped after `onset_s` over `tau_s`
    experiences it."""
    h = max(h, 0.0)
    if h <= onset_s:
        return h
    return onset_s - tau_s * math.expm1(-(h - onset_s) / tau_s)


@njit(cache=True)
def _projection(
    h: np.ndarray,
    low: float,
    high: float,
    level: float,
    slope: float,
    onset_s: float,
    tau_s: float,
    sigma: float,
    n_eff: float,
    t_offset_s: float,
    sxx: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return a LocalTrend's values and ~90 % band's lower and upper edges `h` seconds after
    its t_ref, kept within [low, high].

    The band comes from the line's prediction interval at the damped lead. Damping is a
    judgement, not a measurement: the band also reaches, on the trend's side, as far as the
    undamped straight line would go.
    """
    t_q = _t_quantile(n_eff - 2)
    values, lower, upper = np.empty(len(h)), np.empty(len(h)), np.empty(len(h))
    for k in range(len(h)):
        g = _elapsed(h[k], onset_s, tau_s)
        value = level + slope * g
        lead = t_offset_s + g
        var = 1.0 + 1.0 / n_eff + lead**2 / sxx if sxx > 0 else 1.0
        half_width = t_q * sigma * math.sqrt(var)
        undamped = slope * (max(h[k], 0.0) - g)
        values[k] = min(max(value, low), high)
        lower[k] = min(max(value - half_width + min(undamped, 0.0), low), high)
        upper[k] = min(max(value + half_width + max(undamped, 0.0), low), high)
    return values, lower, upper


@njit(cache=True)
def _widen(
    lower: np.ndarray,
    upper: np.ndarray,
    values: np.ndarray,
    t: np.ndarray,
    y: np.ndarray,
    level: float,
    slope: float,
    t_ref: float,
    lead: np.ndarray,
    low: float,
    high: float,
) -> bool:
    """Widen the band (`lower`, `upper`, in place) to hold where the series may wander from its
    newest value in each `lead` seconds, kept within [low, high]; return whether the values
    and band are all numbers.

    How far it may wander comes from the variogram of its residuals around the trend's line
    (half the mean squared change over each lag, up to half the points), read at the lead's
    lag and, past the longest, extended along the upper half's slope (never down). White noise
    gives a flat variogram (about 2.3 sigma either side); a series that drifts, a growing one.
    """
    n = len(y)
    r = y - (level + slope * (t - t_ref))
    lags = n // 2
    gamma = np.empty(lags)
    for lag in range(1, lags + 1):
        d = r[lag:] - r[:-lag]
        gamma[lag - 1] = 0.5 * (d @ d) / len(d)
    step = (t[-1] - t[0]) / (n - 1)
    later = gamma[lags // 2 :]
    growth = 0.0
    if len(later) >= 2:
        x = np.arange(len(later)) - (len(later) - 1) / 2.0
        growth = max((x @ (later - later.mean())) / (x @ x), 0.0)
    finite = True
    for i in range(len(lead)):
        k = max(lead[i], 0.0) / step if step > 0 else 0.0
        if k <= 1.0:
            g = gamma[0] * k
        elif k <= lags:
            j = int(k)
            g = gamma[j - 1] + (k - j) * (gamma[min(j, lags - 1)] - gamma[j - 1])
        else:
            g = gamma[lags - 1] + growth * (k - lags)
        reach = BAND_Z * math.sqrt(max(g, 0.0) * 2.0)
        # Checked before they are combined: min and max pass a NaN over.
        finite = finite and math.isfinite(values[i] + lower[i] + upper[i] + reach)
        lower[i] = min(lower[i], min(max(y[-1] - reach, low), high))
        upper[i] = max(upper[i], min(max(y[-1] + reach, low), high))
    return finite


def _bounds(metric: str) -> tuple[float, float]:
    """Every series in the window is non-negative; percentages stop at 100."""
    return (0.0, 100.0) if metric.endswith("_pct") else (0.0, math.inf)


def default_thresholds(w: Window, metric: str) -> dict[str, float]:
    """Return the thresholds an operator would use for `metric` (GPU bytes: the GPUs' total)."""
    if metric == "gpu_mem_used_bytes":
        total = newest(w, "gpu_mem_total_bytes")
        return {} if math.isnan(total) else {"gpu_mem_full": 0.995 * total}
    return dict(DEFAULT_THRESHOLDS.get(metric, {}))


def forecast(
    w: Window,
    metric: str,
    now: float,
    horizon_s: float = DEFAULT_HORIZON_S,
    thresholds: Mapping[str, float] | None = None,
    lookback_s: float = LOOKBACK_S,
    steps: int = STEPS,
) -> Forecast:
    """Return the forecast of `metric` for `horizon_s` after `now`.

    The projected values are at `steps` evenly spaced future times; `crossings` maps each
    threshold's name to the expected epoch time the value reaches it (`now` if it already
    has), or None when not within the horizon. With too little data the lists are empty and
    no crossing is expected.
    """
    limits = dict(default_thresholds(w, metric) if thresholds is None else thresholds)
    model = local_trend(w, metric, lookback_s)
    if model is None:
        return Forecast(metric, [], [], [], [], {name: None for name in limits})
    times = now + horizon_s * np.arange(1, steps + 1) / steps
    lead = times - model.t_ref
    low, high = _bounds(metric)
    values, lower, upper = model.path(lead, low, high)
    t, y = recent(w, metric, lookback_s)
    if not _widen(lower, upper, values, t, y, model.level, model.slope, model.t_ref, lead, low,
                  high):  # fmt: skip
        # A reading too large to square leaves the band unknown: no forecast, rather than
        # numbers a JSON column refuses. Checkpoints never bring one (learning.window reads
        # what is beyond MAX_READING as missing); a window built by hand can.
        return Forecast(metric, [], [], [], [], {name: None for name in limits})
    return Forecast(
        metric=metric,
        times=times.tolist(),
        values=values.tolist(),
        lower=lower.tolist(),
        upper=upper.tolist(),
        crossings={name: _crossing(model, v, now, horizon_s) for name, v in limits.items()},
    )


def _crossing(model: LocalTrend, threshold: float, now: float, horizon_s: float) -> float | None:
    lead = model.time_to(threshold)
    if lead is None:
        return None
    at = float(max(model.t_ref + lead, now))
    return at if at <= now + horizon_s else None


def threshold_alarm(w: Window, metric: str, threshold: float) -> bool:
    """Return whether the newest value of `metric` is at or above `threshold` (the baseline
    operators use today: a fixed alert rule)."""
    last = newest(w, metric)
    return not math.isnan(last) and last >= threshold


def predict_linear(
    w: Window, metric: str, now: float, horizon_s: float, lookback_s: float = LOOKBACK_S
) -> float:
    """Return Prometheus' `predict_linear(metric[lookback], horizon)` evaluated at `now`.

    Least squares over the samples in (now - lookback, now], with time taken relative to
    `now` as Prometheus does, then the line's value `horizon_s` later. NaN with fewer than
    two samples.
    """
    keep = (w.t > now - lookback_s) & (w.t <= now)
    t, y = clean(w.t[keep] - now, series(w, metric)[keep])
    if len(t) < 2 or float(np.ptp(t)) == 0.0:
        return math.nan
    dt = t - t.mean()
    slope = float((dt * (y - y.mean())).sum() / (dt * dt).sum())
    intercept = float(y.mean() - slope * t.mean())
    return intercept + slope * horizon_s
