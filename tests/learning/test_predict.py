"""How learning.predict combines its sources into one prediction per failure type."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.checkpoint import to_dict
from learning.hysteresis import OPEN_AT
from learning.predict import (
    HostAnalyzer,
    PredictiveFailureDetector,
    _Belief,
    _prediction,
    analyze,
)
from learning.prediction import Evidence
from tests.factories import GIB, make_checkpoint, with_gpus

T0 = 1_780_000_000.0


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


def test_anomalies_of_one_slowdown_count_as_one_reason() -> None:
    # Latency unusual on its own and in the host's whole picture: one observation, seen twice.
    beliefs = [belief("anomaly:itl_p99_s", 0.44), belief("anomaly:multivariate", 0.45)]
    p = _prediction("performance_degradation", beliefs, 300.0)
    assert p.probability == pytest.approx(0.45) and p.probability < OPEN_AT
    with_detector = _prediction(
        "performance_degradation", [*beliefs, belief("detector:itl_p99_s_degraded", 0.49)], 300.0
    )
    assert with_detector.probability == pytest.approx(1 - 0.55 * 0.51)


def test_a_strong_finding_alone_opens_and_the_soonest_believer_sets_the_time() -> None:
    beliefs = [
        belief("detector:kv_cache_demand", 0.92, 70.0),
        belief("forecast:kv_cache_usage_pct", 0.4, 20.0),  # below 0.5: not a believer
        belief("pattern:v1", 0.6, 110.0),
    ]
    p = _prediction("kv_cache_exhausted", beliefs, 300.0)
    assert p.probability == pytest.approx(0.92) and p.probability >= OPEN_AT
    assert p.time_to_failure_s == 70.0


def leaking(n: int = 120) -> list[dict[str, Any]]:
    """A host whose GPU memory has been rising for ten minutes, one checkpoint per 5 s; its
    disks and RAM steady."""
    used = [(72 + 0.06 * i) * GIB for i in range(n)]
    window = []
    for i in range(n):
        cp = to_dict(make_checkpoint(collected_at=T0 + 5 * i, gpu_memory_used_bytes=used[i]))
        cp["system"] = system(free_root=400 * GIB)
        window.append(cp)
    return window


def system(free_root: float) -> dict[str, Any]:
    disk = {"path": "/", "total_bytes": 1024 * GIB, "free_bytes": free_root}
    shm = {"path": "/dev/shm", "total_bytes": 32 * GIB, "free_bytes": 31 * GIB}
    return {
        "memory_total_bytes": 64 * GIB,
        "memory_available_bytes": 40 * GIB,
        "disks": [{**disk, "used_bytes": 1024 * GIB - free_root}, {**shm, "used_bytes": GIB}],
    }


def test_a_disk_filling_is_a_system_resource_failure_to_come() -> None:
    window = []
    for i in range(120):  # 100 MiB/s taken, ten minutes on: full in under 4 minutes
        cp = to_dict(make_checkpoint(collected_at=T0 + 5 * i))
        cp["system"] = system(free_root=80 * GIB - 100 * 1024**2 * 5 * i)
        window.append(cp)

    [p] = analyze(window, T0 + 595)

    assert p.failure_type == "system_resource" and p.probability >= OPEN_AT
    assert p.time_to_failure_s is not None and 200 < p.time_to_failure_s < 250
    assert p.evidence[0].source == "detector:disk_exhaustion"
    assert p.recommended_mitigations  # the mitigations issue turns them into proposals


def test_entries_that_are_not_checkpoints_are_left_out_of_the_analysis() -> None:
    window = leaking()
    expected = analyze(window, T0 + 595)
    assert [p.failure_type for p in expected] == ["cuda_oom"]

    undated = to_dict(make_checkpoint(collected_at=T0 + 600, gpu_memory_used_bytes=10 * GIB))
    junk: list[Any] = [None, "checkpoint", 7, [], {"collected_at": "yesterday"}]
    for bad_time in (None, "soon", math.nan, math.inf, [T0]):
        junk.append({**undated, "collected_at": bad_time})
    mixed = [*window[:60], *junk, *window[60:]]

    assert analyze(mixed, T0 + 595) == expected


def test_malformed_parts_of_a_checkpoint_read_as_missing_and_the_rest_is_read() -> None:
    window = leaking()
    for i, cp in enumerate(window[-40:]):
        # Wrong types where objects, lists and numbers belong; the GPU memory stays readable.
        cp["vllm"] = ["not", "an", "object"] if i % 2 else "down"
        cp["process"] = 3
        cp["gpus"][0]["throttle_reasons"] = [["nested"], 5, "gpu_idle"]
        cp["gpus"].append("a GPU that is not an object")
        cp["errors"], cp["gpu_events"], cp["lifecycle_state"] = {"x": 1}, "none", {"bad": 1}

    predictions = analyze(window, T0 + 595)

    assert [p.failure_type for p in predictions] == ["cuda_oom"]
    analyzer = HostAnalyzer()
    assert all(analyzer.add(cp) for cp in window)  # every one used, none raised
    assert not analyzer.add(window[-1])  # as old as the newest: ignored


JUNK: list[Any] = [None, "x", -1, 1e308, math.nan, math.inf, [], {}, True, "12", [None], {"a": 1}]


def _mutate(part: Any, rng: random.Random) -> None:
    """Replace, drop or descend into one random field or item of `part`, in place."""
    keys = list(part) if isinstance(part, dict) else list(range(len(part)))
    if not keys:
        return
    key, r = rng.choice(keys), rng.random()
    if r < 0.3:
        part[key] = rng.choice(JUNK)
    elif r < 0.4:
        del part[key]
    elif isinstance(part[key], dict | list):
        _mutate(part[key], rng)


@pytest.mark.parametrize("seed", range(40))
def test_no_mutation_of_the_checkpoints_makes_the_analysis_raise(seed: int) -> None:
    rng = random.Random(seed)
    window: list[Any] = leaking(60)
    for _ in range(rng.choice([1, 5, 30, 120])):
        i = rng.randrange(len(window))
        if rng.random() < 0.05:
            window[i] = rng.choice(JUNK)
        elif isinstance(window[i], dict):
            _mutate(window[i], rng)

    predictions = analyze(window, T0 + 295)

    assert all(0.0 <= p.probability <= 1.0 for p in predictions)
    analyzer = HostAnalyzer()
    for cp in window:
        analyzer.add(cp)
    for f in analyzer.analyze(T0 + 295).forecasts:  # stored as JSON: numbers only
        assert all(math.isfinite(x) for x in f.times + f.values + f.lower + f.upper), f


def test_one_gpu_of_four_filling_up_is_forecast_to_be_full_and_predicted_an_oom() -> None:
    # A foreign process takes 60 MiB/s on GPU 2 of a tensor-parallel host; the others hold
    # steady. The four GPUs together are 91 % used, rising a quarter as fast: 99.5 % in 8 min.
    analyzer = HostAnalyzer()
    for i in range(120):
        used = [72 * GIB] * 4
        used[2] = 40 * GIB + 60 * 1024**2 * 5 * i  # full 87 s after the last checkpoint
        analyzer.add(with_gpus(to_dict(make_checkpoint(collected_at=T0 + 5 * i)), used))
    analysis = analyzer.analyze(T0 + 595)

    [memory] = [f for f in analysis.forecasts if f.metric == "gpu_mem_used_pct"]
    assert memory.values[0] > 93 and memory.crossings["gpu_mem_full"] is not None
    assert 60 < memory.crossings["gpu_mem_full"] - (T0 + 595) < 120
    [oom] = [p for p in analysis.predictions if p.failure_type == "cuda_oom"]
    assert oom.probability >= OPEN_AT


def test_times_other_exporters_write_are_read_and_a_bad_one_never_raises() -> None:
    window = leaking()
    expected = analyze(window, T0 + 595)
    iso = [{**cp, "collected_at": datetime.fromtimestamp(cp["collected_at"], UTC).isoformat()}
           for cp in window]  # fmt: skip
    quoted = [{**cp, "collected_at": str(cp["collected_at"])} for cp in window]
    naive = [{**cp, "collected_at": datetime.fromtimestamp(cp["collected_at"], UTC)
              .replace(tzinfo=None).isoformat()} for cp in window]  # fmt: skip
    for variant in (iso, quoted, naive):
        assert analyze(variant, T0 + 595) == expected

    detector = PredictiveFailureDetector()
    for cp in window:
        detector.analyze_checkpoint(cp)
    before = detector.analyze_checkpoint({**window[-1], "collected_at": "yesterday"})
    assert [p.failure_type for p in before] == ["cuda_oom"]  # the stray one is left out
    assert detector.analyze_checkpoint("junk") == before  # type: ignore[arg-type]


def test_now_may_be_a_datetime_or_an_iso_time_and_anything_else_is_a_clear_error() -> None:
    window = leaking()
    expected = analyze(window, T0 + 595)
    at = datetime.fromtimestamp(T0 + 595, UTC)

    for now in (at, at.isoformat(), at.replace(tzinfo=None), str(T0 + 595)):
        assert analyze(window, now) == expected, now
    for bad in (None, "later", math.nan, [T0]):
        with pytest.raises(ValueError, match="now must be a time"):
            analyze(window, bad)  # type: ignore[arg-type]


def test_a_window_long_before_now_is_analysed_without_raising() -> None:
    # An exported trace analysed days later: the KV cache's growth, fitted in log space, was
    # projected to `now` and overflowed (OverflowError from exp).
    window = [to_dict(make_checkpoint(collected_at=T0 + 5 * i, kv_cache_usage_pct=10 * 1.06**i))
              for i in range(31)]  # fmt: skip
    for later in (0.0, 3600.0, 11 * 86_400.0, 1e9):
        predictions = analyze(window, T0 + 150 + later)
        assert all(0.0 <= p.probability <= 1.0 for p in predictions), later
