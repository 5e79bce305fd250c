"""Robust trend statistics over short series. Pure.

Theil-Sen's slope (the median of the pairwise slopes) shrugs off outliers and a few bad
scrapes, and Mann-Kendall's S (the sum of the pairwise signs) says whether a rise is
consistent rather than one jump. Both come from the same pairs, so `trend()` builds them once.
On 120 points that is 7,140 pairs: about 20 microseconds, in loops compiled by numba.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its sigma
MEAN_AD_TO_SIGMA = 1.2533  # and its mean absolute deviation times this
TRIM_SIGMAS = 3.0  # residuals further out than this are outliers
TRIM_VARIANCE_KEPT = 0.9733  # the share of a normal's variance within +-3 sigma


class Trend(NamedTuple):
    """A robust straight line through one series, and how consistent its direction is (a named
    tuple, not a dataclass: the compiled kernels below build them)."""

    slope: float  # units per second (Theil-Sen)
    level: float  # the line's value at `t_ref`
    t_ref: float  # epoch seconds the level is given at
    z: float  # Mann-Kendall z-score: > 2 rising, < -2 falling, about 0 no trend
    n: int  # points used
    span_s: float  # time between the first and the last point
    residual_scale: float  # robust sigma of the points around the line

    def value_at(self, t: float) -> float:
        return self.level + self.slope * (t - self.t_ref)


def clean(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return `t` and `y` where `y` is a number."""
    keep = ~np.isnan(y)
    return t[keep], y[keep]


def mean(x: np.ndarray) -> float:
    """Return the mean of a non-empty 1-D array (ndarray.mean is Python code around the same
    sum: a third of these detectors' time went to its overhead on short arrays)."""
    return float(x.sum()) / len(x)


def median(x: np.ndarray) -> float:
    """Return the median of a non-empty 1-D array (np.partition: a quarter of np.median's cost
    on short arrays, which is what these detectors have)."""
    n = len(x)
    k = n // 2
    if n % 2:
        return float(np.partition(x, k)[k])
    part = np.partition(x, (k - 1, k))
    return 0.5 * float(part[k - 1] + part[k])


def robust_scale(x: np.ndarray, centre: float | None = None) -> float:
    """Return a robust sigma of `x` around `centre` (default its median): 1.4826 x the median
    absolute deviation; 0 when empty.

    Integer-valued series (a temperature, a queue) often have more than half their points
    on the median, which makes the MAD 0 while they still move; the mean absolute deviation
    (x 1.2533 for a normal sigma) stands in then.
    """
    if len(x) == 0:
        return 0.0
    x = floats(x)
    return float(_scale_around(x, median(x) if centre is None else float(centre)))


def trend(t: np.ndarray, y: np.ndarray, t_ref: float | None = None, with_z: bool = True) -> Trend:
    """Return the Theil-Sen line and the Mann-Kendall z of `y` over `t` (NaN-free, oldest first).

    The level is the median of the points moved along the slope to `t_ref` (default: the
    last time), so it is the robust "where the series is now". `with_z=False` skips the
    z (left 0) where only the line is needed.
    """
    n = len(t)
    ref = float(t[-1]) if t_ref is None and n else float(t_ref or 0.0)
    if n < 2:
        level = float(y[0]) if n else math.nan
        return Trend(0.0, level, ref, 0.0, n, 0.0, 0.0)
    return _trend(floats(t), floats(y), ref, with_z)


def floats(x: np.ndarray) -> np.ndarray:
    """Return `x` as the compiled kernels take it, a contiguous float64 array (one compiled
    version each, no recompiling for other types)."""
    return np.ascontiguousarray(x, dtype=np.float64)


# The kernels, compiled by numba on first use (and cached on disk). As numpy calls they were
# most of an analysis' cost: about 40 calls per fit, each dominated by its own overhead on
# arrays this short. Compiled, a fit costs about a fifth as much.


@njit(cache=True)
def trend_of(t: np.ndarray, y: np.ndarray) -> Trend:
    """trend(t, y) for compiled callers (at least two points)."""
    return _trend(t, y, t[-1], True)


@njit(cache=True)
def _trend(t: np.ndarray, y: np.ndarray, ref: float, with_z: bool) -> Trend:
    slopes, _, _, signs, _ = _pair_slopes(t, y, 0)
    return _line(t, y, slopes, ref, _mann_kendall_z(signs, y) if with_z else 0.0)


@njit(cache=True)
def halves(t: np.ndarray, y: np.ndarray) -> tuple[Trend, Trend, Trend]:
    """Return the trends of the whole series, of its older half (without z) and of its newer
    half, from one set of pairs: each half's pairs are a subset of the whole's.

    Exactly `trend(t, y)`, `trend(t[:h], y[:h], with_z=False)` and `trend(t[h:], y[h:])` for
    h = len(t) // 2, at about half the cost. Needs 4 points or more, as floats().
    """
    half = len(t) // 2
    whole, older, newer, signs, newer_signs = _pair_slopes(t, y, half)
    return (
        _line(t, y, whole, t[-1], _mann_kendall_z(signs, y)),
        _line(t[:half], y[:half], older, t[half - 1], 0.0),
        _line(t[half:], y[half:], newer, t[-1], _mann_kendall_z(newer_signs, y[half:])),
    )


@njit(cache=True)
def _pair_slopes(
    t: np.ndarray, y: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Return the slopes of every pair of points, of the pairs within the older `half` points
    and of those within the newer rest (both empty when `half` is 0), and the sign sums of
    all pairs and of the newer ones. Two checkpoints can share a timestamp: such a pair has
    no slope, but a sign."""
    n = len(t)
    m = n * (n - 1) // 2
    whole, older, newer = np.empty(m), np.empty(m), np.empty(m)
    n_whole = n_older = n_newer = 0
    signs = newer_signs = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            dy = y[j] - y[i]
            sign = (dy > 0) - (dy < 0)
            signs += sign
            if half and i >= half:
                newer_signs += sign
            dt = t[j] - t[i]
            if dt > 0:
                slope = dy / dt
                whole[n_whole] = slope
                n_whole += 1
                if half and j < half:
                    older[n_older] = slope
                    n_older += 1
                elif half and i >= half:
                    newer[n_newer] = slope
                    n_newer += 1
    return whole[:n_whole], older[:n_older], newer[:n_newer], signs, newer_signs


@njit(cache=True)
def _line(t: np.ndarray, y: np.ndarray, slopes: np.ndarray, ref: float, z: float) -> Trend:
    """Return the Theil-Sen line through `y` from its pairs' `slopes`, with the level at `ref`
    and Mann-Kendall's `z` as given."""
    slope = np.median(slopes) if len(slopes) else 0.0
    moved = y - slope * (t - ref)
    level = np.median(moved)
    scale = _residual_sigma(moved - level, 2)
    return Trend(slope, level, ref, z, len(t), t[-1] - t[0], scale)


@njit(cache=True)
def _scale_around(x: np.ndarray, centre: float) -> float:
    deviations = np.abs(x - centre)
    mad = float(np.median(deviations))
    return MAD_TO_SIGMA * mad if mad > 0 else MEAN_AD_TO_SIGMA * float(deviations.sum()) / len(x)


@njit(cache=True)
def _residual_sigma(residuals: np.ndarray, fitted: int) -> float:
    """Return the sigma of residuals around a fitted line (median residual 0), robust yet
    efficient.

    The MAD alone is noisy (37 % efficient: about 15 % error on 60 points, which would make a
    band miss too often), so it only picks the outliers: beyond 3 sigma they are dropped and
    the rest give a standard deviation, corrected for the cut and the `fitted` parameters.
    """
    n = len(residuals)
    if n == 0:
        return 0.0
    first = _scale_around(residuals, 0.0)
    if first == 0.0 or n <= fitted:
        return first
    squares, inside = 0.0, 0
    for r in residuals:
        if abs(r) <= TRIM_SIGMAS * first:
            squares += r * r
            inside += 1
    return math.sqrt(squares / inside / TRIM_VARIANCE_KEPT) * math.sqrt(n / (n - fitted))


@njit(cache=True)
def _mann_kendall_z(s: float, y: np.ndarray) -> float:
    """Return Mann-Kendall's z for the sign sum `s` of `y`, with the variance corrected for
    ties (integer series such as the queue length tie a lot)."""
    n = len(y)
    ordered = np.sort(y)
    ties = 0.0
    run = 1
    for k in range(1, n + 1):
        if k < n and ordered[k] == ordered[k - 1]:
            run += 1
            continue
        ties += run * (run - 1) * (2 * run + 5)
        run = 1
    var = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    if var <= 0 or s == 0:
        return 0.0
    return (s - math.copysign(1.0, s)) / math.sqrt(var)


@njit(cache=True)
def quarter_rises(y: np.ndarray) -> np.ndarray:
    """Return the differences between the medians of `y`'s four consecutive quarters (split as
    np.array_split does: the first n % 4 quarters one longer; NaN for an empty quarter).

    A leak rises in every quarter; a one-off step rises in one and stays flat in the others.
    """
    size, longer = len(y) // 4, len(y) % 4
    medians = np.empty(4)
    start = 0
    for q in range(4):
        end = start + size + (1 if q < longer else 0)
        medians[q] = np.median(y[start:end]) if end > start else math.nan
        start = end
    return np.diff(medians)


@njit(cache=True)
def scale_of(x: np.ndarray) -> float:
    """robust_scale(x) around its median, for compiled callers (`x` NaN-free)."""
    return _scale_around(x, np.median(x)) if len(x) else 0.0


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Return the (plain, not robust) least-squares slope of `y` over `x` and its value at x = 0."""
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx <= 0:
        return math.nan, math.nan
    slope = float(dx @ (y - y.mean())) / sxx
    return slope, float(y.mean() - slope * x.mean())
