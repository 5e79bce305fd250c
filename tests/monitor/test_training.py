"""The learner trains the pattern model on the fleet's own stored history."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from django.utils import timezone

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


def test_it_trains_on_the_fleets_own_failures_when_it_has_seen_enough(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    models_cache.forget()
    monkeypatch.setattr(training, "PIECE_S", 240.0)  # each host's history read in pieces
    runs = [simulate("memory_leak_oom", seed, 900.0) for seed in range(12)]
    for i, run in enumerate(runs):
        host = Host.objects.create(name=f"gpu-{i + 1:02d}", agent_url="http://x:1", agent_token="t")
        _store_history(
            host, run.checkpoints, time.time() - 3600 - run.checkpoints[-1]["collected_at"]
        )
    assert training.needs_training(timezone.now()) == "no pattern model yet"

    row = training.train()

    assert row is not None and row.active and row.version == 1
    assert row.card["provenance"] == "this fleet's last 7 days"
    assert "cuda_oom" in row.card["types"]
    assert models_cache.pattern_model() is not None  # the new model loads
    assert training.needs_training(timezone.now()) is None
    assert LearnedModel.objects.count() == 1


def test_a_second_training_waits_for_none_and_leaves_while_one_runs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A cold start takes minutes; a check due meanwhile must not start another in a second
    worker slot (in the demo, both slots trained and polling stopped)."""
    from django.db import connection

    def train() -> None:
        raise AssertionError("trained while another worker held the training lock")

    monkeypatch.setattr(training, "train", train)
    other = connection.copy()  # another session, as another worker's would be
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", list(training.TRAINING_LOCK))
        assert training.train_if_needed(timezone.now()) == training.BUSY
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", list(training.TRAINING_LOCK))
        with pytest.raises(AssertionError, match="trained while"):
            training.train_if_needed(timezone.now())  # free again, and no model: it trains
        with other.cursor() as cursor:  # a training that failed let go of the lock
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", list(training.TRAINING_LOCK))
            assert cursor.fetchone()[0] is True
    finally:
        other.close()


def test_it_retrains_once_a_period_even_without_new_failures(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The windows that led nowhere move on with the fleet's traffic: a model is checked
    against the fleet's history once a period, and a model kept then waits a period again."""
    from datetime import timedelta

    from learning import patterns, store

    settings.PATTERN_RETRAIN_EVERY_S = 3600.0
    models_cache.forget()
    # A small cold start (the real one simulates minutes of every scenario with 8 seeds).
    row = store.save_pattern_model(patterns.cold_start(seeds=(0,), duration_s=300.0))
    assert "simulator" in row.card["provenance"]
    now = timezone.now()
    assert training.needs_training(now + timedelta(minutes=59)) is None
    assert "last checked" in (training.needs_training(now + timedelta(minutes=61)) or "")

    def cold_start(**_: object) -> None:
        raise AssertionError("a working model was replaced by another cold start")

    monkeypatch.setattr(patterns, "cold_start", cold_start)
    assert training.train() is None  # the fleet's history is still not enough: kept
    kept = LearnedModel.objects.get(active=True)
    assert kept.pk == row.pk and "kept_at" in kept.card
    assert training.needs_training(timezone.now() + timedelta(minutes=59)) is None


def test_training_here_by_command_waits_for_none_either(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from io import StringIO

    from django.core.management import call_command
    from django.db import connection

    def train() -> None:
        raise AssertionError("trained while another worker held the training lock")

    monkeypatch.setattr(training, "train", train)
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", list(training.TRAINING_LOCK))
        out = StringIO()
        call_command("train_patterns", "--here", stdout=out)
        assert out.getvalue().strip() == training.BUSY
    finally:
        other.close()
