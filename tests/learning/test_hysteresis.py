from __future__ import annotations

from learning.hysteresis import decide
from learning.prediction import Prediction


def p(failure_type: str, probability: float) -> Prediction:
    return Prediction(
        failure_type=failure_type, probability=probability, time_to_failure_s=120.0, confidence=0.8
    )


def test_it_opens_only_at_the_upper_threshold() -> None:
    decision = decide({}, [p("cuda_oom", 0.59), p("kv_cache_exhausted", 0.6)], now=1000.0)
    assert [x.failure_type for x in decision.opened] == ["kv_cache_exhausted"]
    assert decision.kept == [] and decision.closed == []


def test_it_keeps_an_open_prediction_between_the_thresholds() -> None:
    decision = decide({"cuda_oom": 900.0}, [p("cuda_oom", 0.4)], now=1000.0)
    assert [x.probability for x in decision.kept] == [0.4] and decision.closed == []


def test_it_closes_below_the_lower_threshold_only_after_the_minimum_time() -> None:
    assert decide({"cuda_oom": 980.0}, [p("cuda_oom", 0.1)], now=1000.0).closed == []
    assert decide({"cuda_oom": 900.0}, [p("cuda_oom", 0.1)], now=1000.0).closed == ["cuda_oom"]


def test_it_closes_a_prediction_the_analysis_no_longer_makes() -> None:
    decision = decide({"hang": 800.0, "cuda_oom": 990.0}, [], now=1000.0)
    assert decision.closed == ["hang"]  # cuda_oom has not been open a minute yet


def test_it_does_not_flap_on_a_wobbling_probability() -> None:
    open_since: dict[str, float] = {}
    changes = 0
    for i, probability in enumerate([0.65, 0.5, 0.62, 0.35, 0.58, 0.61, 0.31, 0.6]):
        decision = decide(open_since, [p("cuda_oom", probability)], now=1000.0 + 5 * i)
        for opened in decision.opened:
            open_since[opened.failure_type] = 1000.0 + 5 * i
            changes += 1
        for closed in decision.closed:
            del open_since[closed]
            changes += 1
    assert changes == 1  # opened once, never closed
