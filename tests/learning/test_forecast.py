from __future__ import annotations

import math

import numpy as np

from agent.checkpoint import to_dict
from learning.forecast import (
    default_thresholds,
    fit_local_trend,
    forecast,
    predict_linear,
    threshold_alarm,
)
from learning.window import Window, window
from tests.factories import GIB, make_checkpoint

T0 = 1_780_000_000.0


def series_window(values: np.ndarray, metric: str, step_s: float = 5.0, **states: str) -> Window:
    """A window of one series every `step_s` seconds from T0, all serving unless `states`
    maps an index (as a string) to another state."""
    t = T0 + step_s * np.arange(len(values))
    names = [states.get(str(i), "serving") for i in range(len(values))]
    return Window(t, {metric: np.asarray(values, dtype=float)}, names)


def test_it_covers_about_90_percent_of_noisy_linear_data() -> None:
    rng = np.random.default_rng(7)
    inside = []
    for _ in range(200):
        t = np.arange(120) * 5.0
        w = series_window(20 + 0.05 * t + rng.normal(0, 2.0, len(t)), "kv_cache_usage_pct")
        now = float(w.t[-1])
        f = forecast(w, "kv_cache_usage_pct", now, horizon_s=300, thresholds={})
        future = np.array(f.times) - T0
        truth = 20 + 0.05 * future + rng.normal(0, 2.0, len(future))
        inside.append((truth >= np.array(f.lower)) & (truth <= np.array(f.upper)))
    coverage = float(np.mean(inside))
    # The band holds the line's interval and where the series may wander from its newest
    # value: on a series that truly is one straight line, the two together hold a little more.
    assert 0.85 <= coverage <= 0.97, coverage


def test_it_covers_about_90_percent_of_a_series_that_wanders() -> None:
    # A load-driven series swings in bursts that come and go (here an AR(1) that forgets half
    # its swing in two minutes): a line through five minutes does not foresee them. The line's
    # interval alone held 58 % of what came.
    rng = np.random.default_rng(11)
    inside = []
    for _ in range(200):
        x = np.empty(120)
        x[0] = 50.0 + rng.normal(0, 2.0 / math.sqrt(1 - 0.97**2))
        for i in range(1, len(x)):
            x[i] = 50.0 + 0.97 * (x[i - 1] - 50.0) + rng.normal(0, 2.0)
        w = series_window(x[:60], "requests_waiting")
        f = forecast(w, "requests_waiting", float(w.t[-1]), horizon_s=300, thresholds={})
        truth = x[np.rint((np.array(f.times) - T0) / 5.0).astype(int)]
        inside.append((truth >= np.array(f.lower)) & (truth <= np.array(f.upper)))
    coverage = np.mean(inside, axis=0)
    assert 0.83 <= coverage.mean() <= 0.95, coverage
    assert coverage.min() >= 0.8, coverage


def test_it_widens_the_band_with_lead_time() -> None:
    rng = np.random.default_rng(1)
    w = series_window(50 + rng.normal(0, 1.0, 60), "requests_waiting")
    f = forecast(w, "requests_waiting", float(w.t[-1]))
    widths = np.array(f.upper) - np.array(f.lower)
    assert widths[-1] > widths[0] > 0
    assert len(f.times) == 10 and f.times[-1] == float(w.t[-1]) + 300


def test_it_expects_no_crossing_for_a_flat_series() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        w = series_window(50 + rng.normal(0, 2.0, 120), "kv_cache_usage_pct")
        f = forecast(w, "kv_cache_usage_pct", float(w.t[-1]), thresholds={"high": 58.0})
        assert f.crossings == {"high": None}
        assert all(45 < v < 55 for v in f.values)


def test_it_expects_a_ramp_to_cross_on_time() -> None:
    rng = np.random.default_rng(5)
    t = np.arange(60) * 5.0  # 0 .. 295 s, rising 0.1 %/s from 30 %
    w = series_window(30 + 0.1 * t + rng.normal(0, 1.0, len(t)), "kv_cache_usage_pct")
    now = float(w.t[-1])
    f = forecast(w, "kv_cache_usage_pct", now, thresholds={"high": 80.0, "full": 99.0})
    expected_high = T0 + (80 - 30) / 0.1  # 500 s after the first point
    crossing = f.crossings["high"]
    assert crossing is not None and abs(crossing - expected_high) < 20
    assert f.crossings["full"] is None  # 690 s: past the 300 s horizon


def test_it_says_now_for_a_threshold_already_crossed() -> None:
    w = series_window(np.full(30, 95.0), "kv_cache_usage_pct")
    now = float(w.t[-1]) + 2
    f = forecast(w, "kv_cache_usage_pct", now, thresholds={"kv_cache_high": 90.0})
    assert f.crossings == {"kv_cache_high": now}


def test_it_levels_off_a_warming_gpu_instead_of_extrapolating() -> None:
    t = np.arange(40) * 5.0  # 200 s of a GPU warming from 30 C toward 60 C (tau 60 s)
    w = series_window(np.round(60 - 30 * np.exp(-t / 60.0)), "gpu_temp_c")
    f = forecast(w, "gpu_temp_c", float(w.t[-1]), horizon_s=600)
    assert f.crossings == {"thermal_slowdown": None}
    assert max(f.values) < 63


def test_it_follows_a_trend_that_has_just_started() -> None:
    flat = np.full(40, 30.0)
    ramp = 30.0 + np.arange(1, 21)  # +1 % per 5 s for the last 100 s, up to 50 %
    w = series_window(np.concatenate([flat, ramp]), "kv_cache_usage_pct")
    model = fit_local_trend(w.t, w["kv_cache_usage_pct"])
    assert model is not None and model.regime == "changed"
    f = forecast(w, "kv_cache_usage_pct", float(w.t[-1]), thresholds={"high": 80.0})
    crossing = f.crossings["high"]
    # 30 % more at 0.2 %/s: 150 s (the whole 300 s lookback's slope would say never)
    assert crossing is not None and abs(crossing - (float(w.t[-1]) + 150)) < 30


def test_it_keeps_percentages_between_0_and_100() -> None:
    t = np.arange(30) * 5.0
    w = series_window(40 + 0.5 * t, "kv_cache_usage_pct")
    f = forecast(w, "kv_cache_usage_pct", float(w.t[-1]))
    assert max(f.upper) == 100.0 and max(f.values) == 100.0 and min(f.lower) >= 0.0


def test_it_does_not_reach_back_across_a_restart() -> None:
    before = np.linspace(60, 99, 30)  # a leak, then the OOM and a restart at index 30-33
    after = np.full(20, 92.7)
    values = np.concatenate([before, [np.nan] * 4, after])
    states = {str(i): "failed_cuda_oom" for i in range(30, 32)}
    states |= {"32": "loading_weights", "33": "starting_api_server"}
    w = series_window(values, "gpu_mem_used_pct", **states)
    f = forecast(w, "gpu_mem_used_pct", float(w.t[-1]))
    assert f.crossings == {"gpu_mem_high": None, "gpu_mem_full": None}
    assert all(abs(v - 92.7) < 0.01 for v in f.values)


def test_it_returns_an_empty_forecast_with_too_few_points() -> None:
    w = series_window(np.array([10.0, 11.0, np.nan, 12.0]), "requests_waiting")
    f = forecast(w, "requests_waiting", float(w.t[-1]), thresholds={"long": 50.0})
    assert f.values == [] and f.lower == [] and f.crossings == {"long": None}


def test_it_forecasts_nothing_for_a_series_the_window_lacks() -> None:
    w = series_window(np.arange(20.0), "requests_waiting")
    f = forecast(w, "kv_cache_usage_pct", float(w.t[-1]))
    assert f.values == [] and f.crossings == {"kv_cache_high": None, "kv_cache_full": None}
    assert not threshold_alarm(w, "kv_cache_usage_pct", 1.0)
    assert math.isnan(predict_linear(w, "kv_cache_usage_pct", float(w.t[-1]), 60.0))


def test_it_uses_the_gpus_total_as_the_byte_threshold() -> None:
    cps = [
        to_dict(make_checkpoint(collected_at=T0 + 5 * i, gpu_memory_used_bytes=(70 + i) * GIB))
        for i in range(12)
    ]
    w = window(cps)
    assert default_thresholds(w, "gpu_mem_used_bytes") == {"gpu_mem_full": 0.995 * 80 * GIB}
    f = forecast(w, "gpu_mem_used_bytes", float(w.t[-1]))
    crossing = f.crossings["gpu_mem_full"]
    assert crossing is not None  # 1 GiB per 5 s: 79.6 GiB about 40 s after 81 GiB... now
    assert crossing - float(w.t[-1]) < 60


def test_it_computes_prometheus_predict_linear() -> None:
    t = np.arange(0, 400, 10.0)
    w = Window(T0 + t, {"requests_waiting": 2.0 + 0.5 * t}, ["serving"] * len(t))
    now = T0 + 390.0
    assert math.isclose(predict_linear(w, "requests_waiting", now, 60.0), 2 + 0.5 * 450)
    # Only the lookback counts: a different line before it changes nothing.
    w["requests_waiting"][:10] = 1000.0
    assert math.isclose(
        predict_linear(w, "requests_waiting", now, 60.0, lookback_s=200.0), 2 + 0.5 * 450
    )
    assert math.isnan(predict_linear(w, "requests_waiting", now, 60.0, lookback_s=5.0))


def test_it_alarms_on_the_newest_value_at_a_fixed_threshold() -> None:
    w = series_window(np.array([80.0, 95.0, np.nan]), "kv_cache_usage_pct")
    assert threshold_alarm(w, "kv_cache_usage_pct", 90.0)
    assert not threshold_alarm(w, "kv_cache_usage_pct", 96.0)
    assert not threshold_alarm(series_window(np.array([np.nan]), "x"), "x", 0.0)


def test_a_series_that_does_not_move_forecasts_itself_with_no_band() -> None:
    w = series_window(np.full(60, 41.5), "kv_cache_usage_pct")
    f = forecast(w, "kv_cache_usage_pct", float(w.t[-1]), thresholds={"high": 90.0})
    assert f.values == f.lower == f.upper == [41.5] * 10
    assert f.crossings == {"high": None}
    model = fit_local_trend(w.t, w["kv_cache_usage_pct"])
    assert model is not None and model.regime == "flat" and model.slope == 0.0


def test_a_reading_too_large_to_square_gives_no_forecast_rather_than_nan() -> None:
    rng = np.random.default_rng(2)
    values = 5 + rng.normal(0, 1.0, 60)
    values[40] = 1e200  # valid in a checkpoint (a non-negative float); its square is not
    w = series_window(values, "requests_waiting")
    f = forecast(w, "requests_waiting", float(w.t[-1]))
    assert f.values == f.lower == f.upper == [] and f.crossings == {"queue_long": None}
    values[40] = 5.0
    f = forecast(series_window(values, "requests_waiting"), "requests_waiting", float(w.t[-1]))
    assert len(f.values) == 10 and np.isfinite(f.lower + f.upper).all()
