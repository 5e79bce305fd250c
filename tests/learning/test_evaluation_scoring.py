"""evaluate/run's scoring on hand-made runs: which alarms count, from when, and when they close."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from agent.checkpoint import to_dict
from learning.history import FailureEvent
from tests.factories import make_checkpoint
from tests.scripts import loaded

T0 = 1_780_000_000.0
KV = "kv_cache_exhausted"


@pytest.fixture(scope="module")
def evaluation() -> Iterator[ModuleType]:
    yield from loaded("evaluate/run")


def run_of(storms: list[tuple[float, float]], duration_s: float = 900.0) -> Any:
    """A serving host checkpointed every 5 s, with KV-cache storms at (start, end) seconds."""
    return SimpleNamespace(
        scenario="kv_cache_exhaustion",
        seed=1,
        checkpoints=[
            to_dict(make_checkpoint(collected_at=T0 + s)) for s in range(0, int(duration_s), 5)
        ],
        truth=[FailureEvent(KV, T0 + a, T0 + b, "metric:preemptions") for a, b in storms],
    )


def predicting(probability: Callable[[float], float]) -> Any:
    """A predictor whose KV probability is `probability(seconds since T0)`."""
    return lambda: lambda cp, w, now: {KV: probability(now - T0)}


def test_an_alarm_left_over_from_a_storm_closes_with_it_and_is_not_a_false_alarm(
    evaluation: ModuleType,
) -> None:
    # Opened during the storm (100-200 s), quiet once it is over: the product closes it
    # 60 s after it opened, and it predicted nothing.
    host = evaluation.replay(
        run_of([(100, 200)]), predicting(lambda s: 0.9 if 150 <= s < 200 else 0.1), 300.0
    )
    (alarm,) = host.alarms
    assert not alarm.counted
    assert alarm.closed_at == T0 + 210  # 60 s after it really opened, not after the storm
    assert evaluation.score([host], KV, 300.0).false == 0


def test_a_left_over_alarm_that_predicts_afresh_counts_from_then(evaluation: ModuleType) -> None:
    # Still open after the first storm, lukewarm, then sure again at 400 s: a prediction of
    # the storm at 500 s made at 400 s (100 s ahead), not at the first storm's end.
    def probability(s: float) -> float:
        return 0.9 if 150 <= s < 200 or 400 <= s < 500 else 0.4

    host = evaluation.replay(run_of([(100, 200), (500, 600)]), predicting(probability), 300.0)
    first = host.alarms[0]
    assert first.counted and first.opened_at == T0 + 400 and first.matched == T0 + 500
    figures = evaluation.score([host], KV, 300.0).figures()
    assert figures["caught"] == 1 and figures["lead_p50_s"] == 100.0


def test_the_operators_disk_lines_are_node_exporters(evaluation: ModuleType) -> None:
    from learning.window import window

    gib = 1024.0**3

    def host(free: Callable[[int], float]) -> Any:
        cps = []
        for i in range(60):
            cp = to_dict(make_checkpoint(collected_at=T0 + 5 * i))
            disk = {"path": "/", "total_bytes": 3000 * gib, "free_bytes": free(i)}
            cp["system"] = {"disks": [{**disk, "used_bytes": 3000 * gib - free(i)}]}
            cps.append(cp)
        w = window(cps)
        return evaluation.threshold_predictor(w, T0 + 295), evaluation.linear_predictor(w, T0 + 295)

    # 150 GiB free (5 %), steady: under 10 % left, but no line heads to empty.
    assert host(lambda i: 150 * gib) == ({"system_resource": 1.0}, {})
    # 10 GiB taken per 5 s, 410 GiB left: over 10 %, but the line empties within 300 s.
    assert host(lambda i: 1000 * gib - 10 * i * gib) == ({}, {"system_resource": 1.0})
    assert host(lambda i: 1000 * gib) == ({}, {})


def test_a_type_without_failures_in_the_runs_is_not_measured_rather_than_missed(
    evaluation: ModuleType,
) -> None:
    nan = float("nan")
    none = {"failures": 0, "recall": nan, "precision": nan, "lead_p50_s": nan,
            "false_per_host_day": 0.0}  # fmt: skip
    met = {"failures": 8, "recall": 1.0, "precision": 1.0, "lead_p50_s": 90.0,
           "false_per_host_day": 0.0}  # fmt: skip
    results = {"kv_cache_exhausted": none, "cuda_oom": met, "thermal_throttling": met}
    lines = evaluation._verdict("sentinel", results).splitlines()
    assert lines[1].split() == ["kv_cache_exhausted", "no", "failure", "of", "this", "type:",
                                "not", "measured"]  # fmt: skip
    assert "MISSED" not in "\n".join(lines)
