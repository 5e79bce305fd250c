"""Window features for the pattern model: levels, robust slopes, limits, errors, state."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agent.checkpoint import ErrorEvent, to_dict
from agent.lifecycle import LifecycleState as S
from learning.features import FEATURE_NAMES, INDEX, features
from learning.window import Window, window
from tests.factories import GIB, make_checkpoint, with_gpus

T0 = 1_781_503_200.0


def _window(count: int, **series: Any) -> tuple[Any, float]:
    """Return a window of `count` checkpoints 5 s apart; each keyword is a function of i."""
    cps = []
    for i in range(count):
        values = {k: f(i) for k, f in series.items()}
        cps.append(to_dict(make_checkpoint(collected_at=T0 + 5 * i, **values)))
    w = window(cps)
    return w, float(w.t[-1])


def _get(x: np.ndarray, name: str) -> float:
    return float(x[INDEX[name]])


def test_it_gives_one_finite_or_missing_value_per_named_feature() -> None:
    w, now = _window(120)
    x = features(w, now)
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == len(x)
    assert not np.isinf(x).any()
    assert _get(x, "now_kv_cache_usage_pct") == 32.0 and _get(x, "state_serving") == 1.0


def test_it_measures_a_memory_leak_as_a_slope_and_a_time_to_full() -> None:
    # 1 GiB per minute from 70 GiB of 80 GiB: full in 6 minutes from the last point.
    leak = {"gpu_memory_used_bytes": lambda i: (70 + i * 5 / 60) * GIB}
    w, now = _window(48, **leak)
    x = features(w, now)

    for lookback in ("30s", "2m"):
        slope = _get(x, f"slope{lookback}_gpu_mem_fullest_used_gib_per_min")
        assert math.isclose(slope, 1.0, rel_tol=1e-6)
    headroom = 80 - (70 + 47 * 5 / 60)
    assert math.isclose(_get(x, "gpu_mem_headroom_gib"), headroom, rel_tol=1e-6)
    assert math.isclose(_get(x, "s_to_gpu_mem_full_2m"), 60 * headroom, rel_tol=1e-6)
    in_5_min = 70 + 47 * 5 / 60 + 5.0  # predict_linear's answer: past the 80 GiB
    assert math.isclose(_get(x, "linear_gpu_mem_fullest_used_gib_in_300s"), in_5_min, rel_tol=1e-6)
    assert _get(x, "vs_baseline_diff_gpu_mem_fullest_used_gib") > 0


def test_it_keeps_one_outlier_out_of_a_robust_slope() -> None:
    spike = {"gpu_temperature_c": lambda i: 95.0 if i == 50 else 60.0}
    w, now = _window(60, **spike)
    assert _get(features(w, now), "slope5m_gpu_temp_c_per_min") == 0.0


def test_it_reads_the_figures_only_since_the_server_came_back() -> None:
    # Memory rose to the limit, the server died and came back: no leak in the new process.
    cps = []
    for i in range(60):
        state = S.FAILED_CUDA_OOM if 30 <= i < 34 else S.SERVING
        used = (70 + i / 3) * GIB if i < 30 else 74 * GIB
        cps.append(to_dict(make_checkpoint(collected_at=T0 + 5 * i, lifecycle_state=state,
                                           gpu_memory_used_bytes=used)))  # fmt: skip
    w = window(cps)
    x = features(w, float(w.t[-1]))
    assert _get(x, "slope5m_gpu_mem_fullest_used_gib_per_min") == 0.0
    assert _get(x, "s_to_gpu_mem_full_5m") == 3600.0  # not rising: capped
    assert _get(x, "failed_fraction") == 4 / 60  # the window still says it failed


def test_it_counts_errors_by_category_and_notes_the_lifecycle_state() -> None:
    oom = ErrorEvent(category="cuda_oom", message="torch.OutOfMemoryError", count=2)
    hang = ErrorEvent(category="worker_timeout_or_hang", message="No available shared memory")
    w, now = _window(
        30,
        errors=lambda i: [oom] if i == 3 else [hang] if i == 20 else [],
        lifecycle_state=lambda i: S.DEGRADED if i == 29 else S.SERVING,
    )
    x = features(w, now)
    assert _get(x, "errors_cuda_oom") == 2 and _get(x, "errors_worker_timeout_or_hang") == 1
    assert _get(x, "state_degraded") == 1.0 and _get(x, "state_serving") == 0.0


def test_it_reads_only_the_last_ten_minutes_of_a_longer_window() -> None:
    oom = ErrorEvent(category="cuda_oom", message="torch.OutOfMemoryError")
    long, now = _window(
        240,
        kv_cache_usage_pct=lambda i: 90.0 if i < 100 else 30.0,
        errors=lambda i: [oom] if i in (5, 200) else [],
    )
    short, _ = _window(
        240, kv_cache_usage_pct=lambda i: 30.0, errors=lambda i: [oom] if i == 200 else []
    )
    assert np.allclose(features(long, now), features(short, now), equal_nan=True)
    assert _get(features(long, now), "errors_cuda_oom") == 1.0


def test_a_window_built_by_hand_gives_the_same_features_as_one_read_from_rows() -> None:
    # Windows read from checkpoints carry a matrix of every column; one built from series
    # (learning.window.Window, or upto/since) has none, and its events come from checkpoints.
    oom = ErrorEvent(category="cuda_oom", message="torch.OutOfMemoryError", count=3)
    w, now = _window(
        100,
        gpu_memory_used_bytes=lambda i: (60 + i / 10) * GIB,
        kv_cache_usage_pct=lambda i: 20.0 + (i % 9),
        errors=lambda i: [oom] if i in (40, 90) else [],
        lifecycle_state=lambda i: S.FAILED_CUDA_OOM if 60 <= i < 64 else S.SERVING,
    )
    by_hand = Window(w.t, w.series, w.states, w.checkpoints)
    assert "matrix" in w.cache and "matrix" not in by_hand.cache
    x, y = features(w, now), features(by_hand, now)
    assert np.allclose(x, y, equal_nan=True, rtol=1e-12)
    assert _get(y, "errors_cuda_oom") == 6.0
    # Without checkpoints there are no events to count, and the rest stays the same.
    bare = features(Window(w.t, w.series, w.states), now)
    assert _get(bare, "errors_cuda_oom") == 0.0
    assert np.allclose(
        bare[: INDEX["errors_cuda_oom"]], x[: INDEX["errors_cuda_oom"]], equal_nan=True
    )


def test_gpu_memory_features_read_the_same_on_one_gpu_and_on_eight() -> None:
    # The same leak on every GPU of a host of eight: the pattern model, which learnt on hosts
    # of one GPU, must see what it would see on one (not eight times the GiB and the slope).
    def host(gpus: int) -> np.ndarray:
        cps = [with_gpus(to_dict(make_checkpoint(collected_at=T0 + 5 * i)),
                         [(70 + i * 5 / 60) * GIB] * gpus) for i in range(48)]  # fmt: skip
        w = window(cps)
        return features(w, float(w.t[-1]))

    one, eight = host(1), host(8)
    memory = [i for i, name in enumerate(FEATURE_NAMES) if "gpu_mem" in name or "power" in name]
    assert len(memory) >= 10
    assert np.allclose(one[memory], eight[memory], equal_nan=True)
    assert math.isclose(_get(eight, "slope2m_gpu_mem_fullest_used_gib_per_min"), 1.0, rel_tol=1e-6)
