"""The learner: it learns what works and what operators want, explains it, and persists."""

from __future__ import annotations

import json
import random

import pytest

from learning.continuous import ContinuousLearningSystem
from learning.labels import Label, LearningContext, context_of

KV = LearningContext("kv_cache_exhausted", "serving", "queued")
OOM = LearningContext("cuda_oom", "serving", "busy")
PRIOR = {"kv_cache_exhausted": ["lower_max_num_seqs", "reset_prefix_cache", "scale_workers"]}


def outcome(ctx: LearningContext, strategy: str, result: str, t: float = 0.0) -> Label:
    return Label("outcome", ctx, strategy, t, outcome=result, execution_s=90.0)


def test_before_any_label_it_follows_the_librarys_order() -> None:
    learner = ContinuousLearningSystem(PRIOR)
    ranked = learner.recommend(KV, PRIOR["kv_cache_exhausted"])
    assert [r.strategy for r in ranked] == PRIOR["kv_cache_exhausted"]
    assert all(r.confidence < 0.5 for r in ranked)  # no history: never confident enough to act
    assert "no history" in ranked[0].why


def test_outcomes_and_vetoes_reorder_and_raise_confidence() -> None:
    learner = ContinuousLearningSystem(PRIOR)
    for i in range(30):
        learner.learn(outcome(KV, "reset_prefix_cache", "success", i))
        learner.learn(Label("approved", KV, "reset_prefix_cache", i))
        learner.learn(outcome(KV, "lower_max_num_seqs", "no_effect" if i % 2 else "success", i))
        learner.learn(Label("vetoed", KV, "scale_workers", i))
    ranked = learner.recommend(KV, PRIOR["kv_cache_exhausted"])
    assert ranked[0].strategy == "reset_prefix_cache"
    assert ranked[0].confidence > 0.85 and ranked[0].n == 30
    vetoed = next(r for r in ranked if r.strategy == "scale_workers")
    assert vetoed.approval < 0.1 and vetoed.confidence < 0.1
    perf = learner.performance(KV.key)["lower_max_num_seqs"]
    assert perf.success_rate == 0.5 and perf.mean_execution_s == 90.0
    assert perf.effectiveness == pytest.approx((15 * 1.0 + 15 * -0.2) / 30)


def test_a_new_context_borrows_from_its_failure_type() -> None:
    learner = ContinuousLearningSystem(PRIOR)
    for i in range(40):
        learner.learn(outcome(KV, "reset_prefix_cache", "success", i))
    other = LearningContext("kv_cache_exhausted", "degraded", "busy")
    borrowed = learner.recommend(other, ["reset_prefix_cache"])[0]
    fresh = ContinuousLearningSystem(PRIOR).recommend(other, ["reset_prefix_cache"])[0]
    assert borrowed.success > fresh.success
    assert borrowed.success < learner.recommend(KV, ["reset_prefix_cache"])[0].success


def test_q_learning_values_what_recovers_over_what_leaves_the_host_failing() -> None:
    learner = ContinuousLearningSystem()
    failed = LearningContext("cuda_oom", "failed_cuda_oom", "idle")
    for i in range(20):
        learner.learn(outcome(OOM, "drain_and_restart", "success", i))
        learner.learn(Label("outcome", OOM, "reduce_batch_size", i, outcome="failure",
                            next_context=failed))  # fmt: skip
    q = learner.q[OOM.key]
    assert q["drain_and_restart"] > 0.9 > 0 > q["reduce_batch_size"]


def test_thompson_sampling_explores_an_untried_strategy_sometimes() -> None:
    learner = ContinuousLearningSystem(PRIOR)
    for i in range(6):
        learner.learn(outcome(KV, "lower_max_num_seqs", "success" if i % 3 else "no_effect", i))
        learner.learn(Label("approved", KV, "lower_max_num_seqs", i))
    rng = random.Random(7)
    firsts = [learner.recommend(KV, PRIOR["kv_cache_exhausted"], explore=True, rng=rng)[0].strategy
              for _ in range(400)]  # fmt: skip
    assert firsts.count("lower_max_num_seqs") > 200  # exploits what works
    assert firsts.count("lower_max_num_seqs") < 400  # and still tries the others


def test_it_extracts_readable_rules() -> None:
    learner = ContinuousLearningSystem()
    for i in range(38):
        learner.learn(outcome(KV, "lower_max_num_seqs", "success" if i < 35 else "failure", i))
    for i in range(12):
        learner.learn(Label("vetoed", OOM, "drain_and_restart", i))
    texts = [r.text for r in learner.rules()]
    assert ("when kv_cache_exhausted in serving with waiting > 50, lower_max_num_seqs succeeds "
            "92 % (n=38)") in texts  # fmt: skip
    veto = "when cuda_oom in serving with requests running, operators veto drain_and_restart"
    assert f"{veto} 100 % (n=12)" in texts


def test_confidence_is_calibrated_by_what_came_true() -> None:
    learner = ContinuousLearningSystem()
    for i in range(100):  # it said 0.95, and only 60 % worked
        learner.learn(Label("outcome", KV, "x", i, outcome="success" if i % 5 < 3 else "failure",
                            confidence=0.95))  # fmt: skip
    assert learner.calibrated(0.95) == pytest.approx((20 * 0.95 + 100 * 0.6) / 120)
    table = learner.reliability()
    assert table == [{"bin": 0.9, "n": 100, "confidence": pytest.approx(0.95), "observed": 0.6}]


def test_its_state_survives_a_round_trip_through_json() -> None:
    learner = ContinuousLearningSystem(PRIOR)
    for i in range(10):
        learner.learn(outcome(KV, "reset_prefix_cache", "success", i))
        learner.learn(Label("vetoed", KV, "scale_workers", i, auto_agreed=False))
    again = ContinuousLearningSystem.from_dict(json.loads(json.dumps(learner.to_dict())))
    assert again.recommend(KV, PRIOR["kv_cache_exhausted"]) == learner.recommend(
        KV, PRIOR["kv_cache_exhausted"]
    )
    assert again.auto_agreement == [0, 10] and again.labels_seen == 20
    with pytest.raises(ValueError, match="format"):
        ContinuousLearningSystem.from_dict({"format": 99})


def test_the_context_of_a_checkpoint() -> None:
    cp = {"lifecycle_state": "serving", "vllm": {"requests_waiting": 80, "requests_running": 200}}
    assert context_of(cp, "kv_cache_exhausted") == KV
    assert context_of({"lifecycle_state": "failed_cuda_oom"}, "cuda_oom").load == "idle"
    assert LearningContext.from_key(KV.key) == KV


def test_the_seeds_calls() -> None:
    learner = ContinuousLearningSystem(PRIOR)
    for i in range(10):
        learner.record_attempt(outcome(KV, "reset_prefix_cache", "success", i))
    ranked = learner.get_learning_recommendations(
        state="SERVING", errors=["kv_cache_exhausted"], metrics={"requests_waiting": 95}
    )
    assert ranked[0].strategy == "reset_prefix_cache" and ranked[0].n == 10
