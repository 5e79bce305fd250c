"""The learner trains the pattern model on the fleet's own stored history."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from monitor import models_cache, training
from monitor.models import Checkpoint, Host, LearnedModel
from simulator.history import simulate

pytestmark = pytest.mark.django_db


def _shifted(value: Any, by: float) -> Any:
    """Return checkpoint data with every epoch time moved by `by` seconds."""
    if isinstance(value, dict):
        return {k: (v + by if _is_time(k, v) else _shifted(v, by)) for k, v in value.items()}
    if isinstance(value, list):
        return [_shifted(v, by) for v in value]
    return value


def _is_time(key: str, value: Any) -> bool:
    timed = key in ("at", "start_time") or key.endswith("_at")
    return timed and isinstance(value, float) and value > 1e9


def _store_history(host: Host, checkpoints: list[dict[str, Any]], by: float) -> None:
    rows = []
    for cp in checkpoints:
        data = _shifted(cp, by)
        at = datetime.fromtimestamp(data["collected_at"], tz=UTC)
        rows.append(Checkpoint(host=host, collected_at=at, received_at=at,
                               lifecycle_state=data["lifecycle_state"],
                               data=msgspec.json.decode(msgspec.json.encode(data))))  # fmt: skip
    Checkpoint.objects.bulk_create(rows)


def test_it_trains_on_the_fleets_own_failures_when_it_has_seen_enough() -> None:
    models_cache.forget()
    runs = [simulate("memory_leak_oom", seed, 900.0) for seed in range(12)]
    for i, run in enumerate(runs):
        host = Host.objects.create(name=f"gpu-{i + 1:02d}", agent_url="http://x:1", agent_token="t")
        _store_history(
            host, run.checkpoints, time.time() - 3600 - run.checkpoints[-1]["collected_at"]
        )
    assert training.needs_training(None) == "no pattern model yet"

    row = training.train()

    assert row is not None and row.active and row.version == 1
    assert row.card["provenance"] == "this fleet's last 7 days"
    assert "cuda_oom" in row.card["types"]
    assert models_cache.pattern_model() is not None  # the new model loads
    assert training.needs_training(None) is None
    assert LearnedModel.objects.count() == 1
