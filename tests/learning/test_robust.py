"""The robust trend statistics (learning/robust.py), compiled by numba: the same figures as
their definitions, computed here the slow, obvious way."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from learning.robust import floats, halves, quarter_rises, robust_scale, scale_of, trend


def theil_sen(t: list[float], y: list[float]) -> float:
    slopes = [
        (y[j] - y[i]) / (t[j] - t[i])
        for i in range(len(t))
        for j in range(i + 1, len(t))
        if t[j] > t[i]
    ]
    return statistics.median(slopes)


def mann_kendall_z(y: list[float]) -> float:
    n = len(y)
    s = sum((y[j] > y[i]) - (y[j] < y[i]) for i in range(n) for j in range(i + 1, n))
    ties = [y.count(v) for v in set(y)]
    var = (n * (n - 1) * (2 * n + 5) - sum(k * (k - 1) * (2 * k + 5) for k in ties)) / 18
    return 0.0 if s == 0 else (s - math.copysign(1, s)) / math.sqrt(var)


def series(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Times 5 s apart with one repeated timestamp, and a rising integer series full of ties."""
    rng = np.random.default_rng(seed)
    t = 1.7e9 + 5.0 * np.arange(n)
    t[n // 3] = t[n // 3 - 1]  # two checkpoints at one time: no slope between them
    y = np.round(0.02 * (t - t[0]) + rng.normal(0, 2, n))
    return t, y


@pytest.mark.parametrize("seed", range(5))
def test_a_trend_is_theil_sens_slope_and_mann_kendalls_z(seed: int) -> None:
    t, y = series(40, seed)
    tr = trend(t, y)
    assert tr.slope == pytest.approx(theil_sen(t.tolist(), y.tolist()), rel=1e-12)
    assert tr.z == pytest.approx(mann_kendall_z(y.tolist()), rel=1e-12)
    moved = [v - tr.slope * (u - t[-1]) for u, v in zip(t, y, strict=True)]
    assert tr.level == pytest.approx(statistics.median(moved), rel=1e-12)
    assert (tr.n, tr.span_s, tr.t_ref) == (40, t[-1] - t[0], t[-1])


@pytest.mark.parametrize("seed", range(5))
def test_halves_are_the_trends_of_the_whole_and_of_each_half(seed: int) -> None:
    t, y = series(41, seed)
    h = len(t) // 2
    whole, older, newer = halves(floats(t), floats(y))
    assert whole == trend(t, y)
    assert older == trend(t[:h], y[:h], with_z=False)
    assert newer == trend(t[h:], y[h:])


def test_one_wild_scrape_does_not_move_the_line() -> None:
    t = 5.0 * np.arange(30)
    y = 2.0 * t + 7.0
    y[12] += 1e6
    tr = trend(t, y)
    assert tr.slope == pytest.approx(2.0)
    assert tr.level == pytest.approx(2.0 * t[-1] + 7.0)
    assert tr.residual_scale == pytest.approx(0.0, abs=1e-9)


def test_a_series_on_its_median_has_the_mean_deviation_as_its_scale() -> None:
    # More than half the points on the median make the MAD 0, yet the series moves.
    x = np.array([5, 5, 5, 5, 5, 6, 4])
    assert robust_scale(x) == pytest.approx(1.2533 * 2 / 7)
    assert robust_scale(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == pytest.approx(1.4826)


@pytest.mark.parametrize("n", [8, 9, 10, 11, 61])
def test_quarter_rises_are_the_steps_between_the_medians_of_four_quarters(n: int) -> None:
    y = np.random.default_rng(n).normal(0.0, 1.0, n)
    quarters = np.array_split(y, 4)  # the first n % 4 quarters one longer
    medians = [statistics.median(q) for q in quarters]
    expected = [b - a for a, b in itertools.pairwise(medians)]
    assert np.allclose(quarter_rises(floats(y)), expected, rtol=0, atol=1e-12)
    assert math.isnan(quarter_rises(floats(y[:3]))[-1])  # an empty quarter has no median


def test_the_compiled_scale_is_robust_scale() -> None:
    y = floats(np.random.default_rng(3).normal(5.0, 2.0, 40))
    assert scale_of(y) == robust_scale(y) and scale_of(floats(np.zeros(0))) == 0.0
