"""How learning.predict combines its sources into one prediction per failure type."""

from __future__ import annotations

import pytest

from learning.hysteresis import OPEN_AT
from learning.predict import _Belief, _prediction
from learning.prediction import Evidence


def belief(source: str, probability: float, eta: float | None = None) -> _Belief:
    return _Belief(probability, eta, Evidence(source, source))


def test_readings_of_the_same_host_series_count_as_their_strongest_not_as_several() -> None:
    # A load spike: the KV detector notes the rise, the forecast crosses 99 % within the
    # horizon, the pattern model gives it 45 %. One reading of one climb, not three reasons.
    beliefs = [
        belief("detector:kv_cache_exhaustion", 0.3, 40.0),
        belief("forecast:kv_cache_usage_pct", 0.4, 150.0),
        belief("pattern:v1", 0.45, 90.0),
    ]
    p = _prediction("kv_cache_exhausted", beliefs, 300.0)
    assert p.probability == pytest.approx(0.45)
    assert p.probability < OPEN_AT  # a noisy-OR would have said 0.77 and opened an alarm
    # All kept, strongest first.
    assert [e.source for e in p.evidence] == [
        "pattern:v1",
        "forecast:kv_cache_usage_pct",
        "detector:kv_cache_exhaustion",
    ]


def test_the_fleet_prior_and_anomalies_add_to_the_host_evidence_as_independent_reasons() -> None:
    beliefs = [
        belief("detector:gpu_memory_leak", 0.7, 200.0),
        belief("state_graph", 0.2),
        belief("anomaly:itl_p99_s", 0.3),
    ]
    p = _prediction("cuda_oom", beliefs, 300.0)
    assert p.probability == pytest.approx(1 - 0.3 * 0.8 * 0.7)
    assert p.time_to_failure_s == 200.0  # from the source that believes it


def test_a_strong_finding_alone_opens_and_the_soonest_believer_sets_the_time() -> None:
    beliefs = [
        belief("detector:kv_cache_demand", 0.92, 70.0),
        belief("forecast:kv_cache_usage_pct", 0.4, 20.0),  # below 0.5: not a believer
        belief("pattern:v1", 0.6, 110.0),
    ]
    p = _prediction("kv_cache_exhausted", beliefs, 300.0)
    assert p.probability == pytest.approx(0.92) and p.probability >= OPEN_AT
    assert p.time_to_failure_s == 70.0
