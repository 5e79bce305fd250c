"""evaluate/forecasts' scoring on hand-made runs: what counts as an outcome of a forecast."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from agent.checkpoint import LifecycleState, to_dict
from tests.factories import make_checkpoint
from tests.scripts import loaded

T0 = 1_780_000_000.0
KV = "kv_cache_usage_pct"


@pytest.fixture(scope="module")
def evaluation() -> Iterator[ModuleType]:
    yield from loaded("evaluate/forecasts")


def run_of(kv: list[float], down: range = range(0)) -> Any:
    """A host checkpointed every 5 s with these KV readings, loading again at the indices `down`."""
    return SimpleNamespace(checkpoints=[
        to_dict(make_checkpoint(
            collected_at=T0 + 5 * i, kv_cache_usage_pct=v,
            lifecycle_state=LifecycleState.LOADING_WEIGHTS if i in down else LifecycleState.SERVING,
        ))
        for i, v in enumerate(kv)
    ])  # fmt: skip


def test_a_steady_series_is_inside_its_band_and_forecast_exactly(evaluation: ModuleType) -> None:
    tallies = evaluation.score([run_of([40.0] * 200)], every=10)
    kv = {lead: t for (metric, lead), t in tallies.items() if metric == KV}
    assert sorted(kv) == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300]
    for tally in kv.values():
        f = tally.figures()
        assert f["coverage"] == 1.0 and f["error"] == 0.0 and f["naive"] == 0.0


def test_a_jump_outside_the_band_counts_against_it(evaluation: ModuleType) -> None:
    # 40 % for 500 s, then 90 %: the forecasts made on the flat part miss the jump.
    tallies = evaluation.score([run_of([40.0] * 100 + [90.0] * 100)], every=10)
    f = tallies[(KV, 300)].figures()
    assert 0.0 < f["coverage"] < 1.0
    assert f["error"] > 0 and f["naive"] > 0


def test_a_restart_ends_the_comparison(evaluation: ModuleType) -> None:
    # Loading again at indices 60-69: forecasts made before it are not compared with what
    # the next run reported, and none is made while the host is down.
    whole = evaluation.score([run_of([40.0] * 200)], every=1)
    broken = evaluation.score([run_of([40.0] * 200, down=range(60, 70))], every=1)
    assert broken[(KV, 300)].n < whole[(KV, 300)].n - 60
    assert broken[(KV, 30)].n < whole[(KV, 30)].n - 10
