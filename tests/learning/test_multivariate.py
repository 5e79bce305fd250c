from __future__ import annotations

import itertools
import random
import time
from typing import Any

import numpy as np
import pytest

from agent.checkpoint import to_dict
from agent.lifecycle import LifecycleState
from learning import multivariate, predict
from learning.predict import HostAnalyzer
from learning.window import SERIES, Window, from_rows, row, window
from tests.factories import make_checkpoint


def healthy_checkpoint(rng: random.Random, at: float, **changes: Any) -> dict[str, Any]:
    """Return a serving checkpoint whose KV use, ITL and throughput follow its load."""
    running = rng.uniform(60, 120)
    figures: dict[str, Any] = {
        "requests_running": running,
        "kv_cache_usage_pct": 0.35 * running + rng.gauss(0, 2),
        "itl_p99_s": 0.02 + 0.0001 * running + rng.gauss(0, 0.001),
        "requests_waiting": float(rng.choice((0, 1, 2, 3))),
        "generation_tokens_per_s": 25 * running + rng.gauss(0, 50),
        "gpu_temperature_c": rng.gauss(62, 1.5),
    }
    return to_dict(make_checkpoint(collected_at=at, **(figures | changes)))


@pytest.fixture(scope="module")
def history() -> list[dict[str, Any]]:
    rng = random.Random(0)
    return [healthy_checkpoint(rng, 1_000.0 + 10 * i) for i in range(1500)]


@pytest.fixture(scope="module")
def model(history: list[dict[str, Any]]) -> multivariate.Model:
    return multivariate.fit([window(history)])


def with_newest(history: list[dict[str, Any]], newest: dict[str, Any]) -> Window:
    return window([*history[-20:], newest])


def test_it_scores_a_healthy_checkpoint_low(
    history: list[dict[str, Any]], model: multivariate.Model
) -> None:
    rng = random.Random(1)
    results = [
        multivariate.score(model, with_newest(history, healthy_checkpoint(rng, 1e6 + i)))
        for i in range(50)
    ]

    assert sum(r.alarm for r in results) <= 1
    assert np.median([r.likelihood for r in results]) < 0.9


def test_it_finds_high_latency_at_normal_load_and_names_it(
    history: list[dict[str, Any]], model: multivariate.Model
) -> None:
    slow = healthy_checkpoint(random.Random(2), 1e6, requests_running=90.0, itl_p99_s=0.08)

    result = multivariate.score(model, with_newest(history, slow))

    assert result.alarm and result.likelihood >= multivariate.ALARM_LIKELIHOOD
    assert {"itl_p99_s", "itl_p99_s_per_running"} & {name for name, _ in result.contributions[:2]}
    assert multivariate.evidence(result)[0].detail.endswith("robust SDs above its healthy median")


def test_it_finds_a_combination_no_single_figure_shows(
    history: list[dict[str, Any]], model: multivariate.Model
) -> None:
    # Each figure is inside its healthy range, but this KV use belongs to twice the load.
    odd = healthy_checkpoint(random.Random(3), 1e6, requests_running=62.0, kv_cache_usage_pct=41.0)

    result = multivariate.score(model, with_newest(history, odd))

    assert result.likelihood >= 0.99
    assert result.contributions[0][0] == "kv_cache_usage_pct_per_running"


def test_it_agrees_with_scikit_learn_on_every_row(
    model: multivariate.Model, history: list[dict[str, Any]]
) -> None:
    from sklearn.ensemble import IsolationForest

    rows = multivariate.feature_rows(window(history))[:, model.columns]
    z = multivariate._standardise(rows, model.medians, model.scales)
    forest = IsolationForest(n_estimators=multivariate.TREES, max_samples=256, random_state=0).fit(
        z
    )

    np.testing.assert_allclose(
        multivariate._raw_scores(model, z), -forest.score_samples(z), atol=1e-12
    )


def test_it_computes_the_newest_row_as_the_whole_window_does(history: list[dict[str, Any]]) -> None:
    w = window(history[:30])

    np.testing.assert_array_equal(multivariate.newest_features(w), multivariate.feature_rows(w)[-1])


def test_it_reads_a_rows_features_as_a_window_of_the_two_does(
    history: list[dict[str, Any]],
) -> None:
    rows = [row(cp) for cp in history[:40]]
    rows[5] = row({**history[5], "collected_at": history[4]["collected_at"]})  # no time between

    for previous, newest in itertools.pairwise(rows):
        np.testing.assert_array_equal(
            multivariate.row_features(previous, newest),
            multivariate.newest_features(from_rows([previous, newest])),
        )


def test_a_hosts_analyzer_learns_its_usual_figures_and_names_what_is_unusual(
    history: list[dict[str, Any]],
) -> None:
    analyzer = HostAnalyzer()
    for cp in history[: predict.USUAL_FIRST_ROWS - 1]:
        analyzer.add(cp)
    assert analyzer._usual_model is None  # less than an hour of serving: nothing usual yet
    for cp in history[predict.USUAL_FIRST_ROWS - 1 : 900]:
        analyzer.add(cp)
    assert analyzer._usual_model is not None and analyzer._usual_model.rows == 720
    now = float(history[899]["collected_at"])
    assert not _multivariate(analyzer.analyze(now).predictions)

    # The KV use of twice this load: every figure within its usual range, and no detector,
    # forecast or single-series anomaly says anything; together they are not this host's way.
    for k in range(1, predict.UNUSUAL_FOR + 1):
        # A reason once it lasts: one healthy checkpoint in 200 is as rare as this.
        assert not _multivariate(analyzer.analyze(now + 10 * (k - 1)).predictions)
        odd = healthy_checkpoint(random.Random(3), now + 10 * k, requests_running=62.0,
                                 kv_cache_usage_pct=41.0)  # fmt: skip
        analyzer.add(odd)
    predictions = analyzer.analyze(now + 10 * predict.UNUSUAL_FOR).predictions

    assert [p.failure_type for p in predictions] == ["performance_degradation"]
    found = predictions[0]
    assert [e.source for e in found.evidence] == ["anomaly:multivariate"]
    assert "kv_cache_usage_pct_per_running" in found.evidence[0].detail
    # One reason, below the opening line on its own.
    assert found.probability == pytest.approx(predict.ANOMALY_WEIGHT * found.evidence[0].value)


def test_a_hosts_analyzer_learns_from_serving_checkpoints_only(
    history: list[dict[str, Any]],
) -> None:
    analyzer = HostAnalyzer()
    for i, cp in enumerate(history[:1000]):
        state = LifecycleState.DEGRADED.value if i % 2 else cp["lifecycle_state"]
        analyzer.add({**cp, "lifecycle_state": state})

    # 500 serving, the first without a previous checkpoint to take its rates from.
    assert len(analyzer._usual) == 499 and analyzer._usual_model is None


def _multivariate(predictions: list[Any]) -> list[Any]:
    return [p for p in predictions
            if any(e.source == "anomaly:multivariate" for e in p.evidence)]  # fmt: skip


def test_a_figure_mostly_zero_has_a_scale_from_its_spikes_and_one_that_never_moved_none() -> None:
    # Failed requests: 0 in 98 checkpoints of 100, 1 a second in the others. Its MAD is 0.
    rows = np.zeros((100, len(multivariate.FEATURES)))
    rows[:, 0] = np.linspace(20, 40, 100)  # a figure that moves, so the forest has something
    failed = multivariate.FEATURES.index("requests_failed_per_s")
    rows[::50, failed] = 1.0
    model = multivariate.fit_rows(rows)

    spike = rows[0].copy()
    spike[failed] = 1.0
    z = dict(multivariate.score_features(model, spike).contributions)
    assert 10 < z["requests_failed_per_s"] < 100  # a spike like those seen: tens, not 10^8

    preempting = rows[1].copy()
    preempting[multivariate.FEATURES.index("preemptions_per_s")] = 3.0  # never before
    result = multivariate.score_features(model, preempting)
    assert result.contributions[0][0] == "preemptions_per_s" and result.alarm
    assert multivariate.evidence(result)[0].detail == (
        "preemptions_per_s is above the one value it always had"
    )


def test_a_figure_beyond_its_own_extremes_stands_out_beside_a_heavy_tailed_one() -> None:
    # TTFT p99 jumps tenfold in 1 checkpoint of 100 on this healthy host: robust z in the
    # hundreds. A GPU 10 degrees hotter than ever (about 7 SDs) must still stand out.
    rng = random.Random(4)
    history = [
        healthy_checkpoint(rng, 1_000.0 + 10 * i, ttft_p99_s=4.2 if i % 100 == 7 else 0.42)
        for i in range(1500)
    ]
    model = multivariate.fit([window(history)])
    hot = healthy_checkpoint(random.Random(5), 1e6, gpu_temperature_c=72.0)

    result = multivariate.score(model, with_newest(history, hot))

    assert result.alarm and result.contributions[0][0] == "gpu_temp_c"


def test_it_learns_from_serving_checkpoints_only(history: list[dict[str, Any]]) -> None:
    loading = [
        to_dict(
            make_checkpoint(
                collected_at=1.0 + i, lifecycle_state=LifecycleState.LOADING_WEIGHTS, vllm=False
            )
        )
        for i in range(300)
    ]

    model = multivariate.fit([window(loading + history)])

    assert model.rows == len(history)


def test_it_refuses_to_fit_without_data() -> None:
    with pytest.raises(ValueError, match="at least two"):
        multivariate.fit([window([])])


def test_it_fits_ten_thousand_rows_in_seconds_and_scores_in_a_fraction_of_a_millisecond() -> None:
    rng = np.random.default_rng(4)
    n = 10_000
    big = Window(
        np.arange(n) * 10.0, {name: rng.normal(50, 5, n) for name in SERIES}, ["serving"] * n
    )
    from sklearn.ensemble import IsolationForest  # noqa: F401 (its import stays out of the timing)

    began = time.perf_counter()
    model = multivariate.fit([big])
    fit_s = time.perf_counter() - began
    recent = Window(big.t[-2:], {k: v[-2:] for k, v in big.series.items()}, ["serving"] * 2)
    began = time.perf_counter()
    for _ in range(200):
        multivariate.score(model, recent)
    score_ms = (time.perf_counter() - began) / 200 * 1e3

    assert fit_s < 10.0
    assert score_ms < 1.0  # 0.3 ms is the budget on a quiet machine: bench/anomaly_speed.py
