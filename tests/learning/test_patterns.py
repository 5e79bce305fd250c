"""The pattern model: trained on a little simulated history, it predicts what it has seen."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import sklearn

from learning import patterns
from learning.history import trailing, training_set
from learning.hysteresis import OPEN_AT
from learning.patterns import MAGIC, MODEL_FORMAT, ModelError, PatternModel
from learning.window import Window, window
from simulator.history import Run, simulate, simulate_many

HELD_OUT_SEED = 100


@pytest.fixture(scope="module")
def model() -> PatternModel:
    # Small on purpose: four leaking hosts and four healthy ones, 7.5 simulated minutes each.
    runs = simulate_many(["memory_leak_oom", "healthy"], [0, 1, 2, 3], 450.0, vary=False)
    windows, labels, groups = training_set([(r.group, r.checkpoints) for r in runs])
    return patterns.train(
        windows, labels, groups=groups, provenance="test runs, seeds 0-3", min_episodes=4
    )


@pytest.fixture(scope="module")
def leak() -> Run:
    return simulate("memory_leak_oom", HELD_OUT_SEED, 240.0, vary=False)


def _probabilities(model: PatternModel, run: Run, failure_type: str) -> list[tuple[float, float]]:
    whole = window(run.checkpoints)
    found = []
    for i, t in enumerate(whole.t.tolist()):
        predictions = patterns.predict(model, trailing(whole, i), t)
        p = {pr.failure_type: pr.probability for pr in predictions}
        found.append((t, p.get(failure_type, 0.0)))
    return found


def test_it_predicts_a_memory_leak_oom_on_a_held_out_seed_before_it_happens(
    model: PatternModel, leak: Run
) -> None:
    (oom, *_) = [f.started_at for f in leak.truth if f.failure_type == "cuda_oom"]
    before = [(t, p) for t, p in _probabilities(model, leak, "cuda_oom") if t < oom]

    first_alarm = next(t for t, p in before if p >= OPEN_AT)
    assert oom - first_alarm >= 60.0
    assert all(p >= OPEN_AT for t, p in before if oom - t <= 60.0)


def test_it_stays_quiet_on_a_healthy_held_out_host(model: PatternModel) -> None:
    healthy = simulate("healthy", HELD_OUT_SEED, 450.0, vary=False)
    probabilities = [p for _, p in _probabilities(model, healthy, "cuda_oom")]
    assert max(probabilities) < OPEN_AT


def test_it_says_when_why_and_how_sure(model: PatternModel, leak: Run) -> None:
    whole = window(leak.checkpoints)
    end = int(np.searchsorted(whole.t, leak.epoch + 150.0))
    (prediction,) = patterns.predict(model, trailing(whole, end), float(whole.t[end]))

    assert prediction.failure_type == "cuda_oom" and prediction.probability >= OPEN_AT
    assert prediction.time_to_failure_s is not None and 0 < prediction.time_to_failure_s <= 300
    assert 0 < prediction.confidence <= 1
    assert prediction.recommended_mitigations[0] == "emergency_gpu_memory_cleanup"
    sources = {e.source for e in prediction.evidence}
    assert sources == {"pattern:v1"}
    assert "test runs, seeds 0-3" in prediction.evidence[0].detail
    assert any("gpu_mem" in e.detail for e in prediction.evidence[1:])
    # Without the explanation (the analysis keeps only the model's line): the same figures.
    (bare,) = patterns.predict(model, trailing(whole, end), float(whole.t[end]), explain=False)
    assert bare.evidence == prediction.evidence[:1]
    assert (bare.probability, bare.confidence) == (prediction.probability, prediction.confidence)


def test_it_needs_a_minute_of_history(model: PatternModel, leak: Run) -> None:
    whole = window(leak.checkpoints)
    young = trailing(whole, 8)  # 45 s of checkpoints
    assert patterns.predict(model, young, float(young.t[-1])) == []


def test_it_carries_its_card(model: PatternModel) -> None:
    card = model.card
    assert card["provenance"] == card["trained_on"] == "test runs, seeds 0-3"
    assert card["held_out_runs"] and set(card["types"]) == {"cuda_oom"}
    held_out = card["types"]["cuda_oom"]["held_out"]
    assert held_out["positives"] > 0 and held_out["precision"] >= 0.9
    assert "kv_cache_exhausted" in card["not_learned"]
    json.dumps(card)  # stored as JSON beside the model


def test_it_compiles_the_trees_to_the_same_scores_as_scikit_learn() -> None:
    # train() refuses to return a model whose compiled trees disagree; here directly.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(patterns.FEATURE_NAMES)))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = np.nan_to_num(x[:, 3]) + np.nan_to_num(x[:, 40]) > 0
    head = patterns._Head("classifier", patterns._classifier(x, y, 0), np.arange(x.shape[1]))
    forest = patterns._compile([head])
    ours = np.array([forest.raw(row)[0] for row in x])
    assert np.allclose(ours, head.estimator.decision_function(x))


def test_it_saves_and_loads_the_same_model(model: PatternModel, leak: Run) -> None:
    loaded = patterns.loads(patterns.dumps(model))
    w = window(leak.checkpoints)
    now = float(w.t[-20])
    assert patterns.predict(loaded, w.since(now - 600), now) == patterns.predict(
        model, w.since(now - 600), now
    )


def test_it_refuses_a_model_saved_with_another_format(model: PatternModel) -> None:
    data = patterns.dumps(model)
    tampered = data.replace(
        f'"model_format": {MODEL_FORMAT}'.encode(), f'"model_format": {MODEL_FORMAT + 1}'.encode()
    )
    with pytest.raises(ModelError, match=f"format {MODEL_FORMAT + 1}.*retrain"):
        patterns.loads(tampered)


def test_it_refuses_a_model_trained_with_another_scikit_learn(model: PatternModel) -> None:
    data = patterns.dumps(model)
    tampered = data.replace(sklearn.__version__.encode(), b"0.0.1", 1)
    with pytest.raises(ModelError, match=r"scikit-learn 0\.0\.1"):
        patterns.loads(tampered)
    with pytest.raises(ModelError, match="not a saved pattern model"):
        patterns.loads(b"pickle" + data[len(MAGIC) :])


def test_it_refuses_a_truncated_or_damaged_model(model: PatternModel) -> None:
    data = patterns.dumps(model)
    header_end = data.index(b"\n") + 1
    for damaged in (data[: len(data) // 2], data[:header_end] + b"\x00garbage", data[:header_end]):
        with pytest.raises(ModelError, match="unreadable"):
            patterns.loads(damaged)


def test_it_predicts_for_one_window_in_about_a_millisecond(model: PatternModel, leak: Run) -> None:
    w: Window = window(leak.checkpoints)
    now = float(w.t[-1])
    for _ in range(20):
        patterns.predict(model, w, now)
    started = time.perf_counter()
    for _ in range(100):
        patterns.predict(model, w, now)
    per_window_ms = (time.perf_counter() - started) / 100 * 1000
    assert per_window_ms < 2.0  # about 0.3 ms here; the margin is for shared CI cores
