"""Train the pattern model on the fleet's own history, or on the simulator's before it has any.

1. Read each host's recent checkpoints (the retention window at most).
2. Label them from what they say: failed states, classified errors, GPU faults, storms
   (learning/history.py), the same way for every fleet.
3. Train when the fleet has seen enough failures of some type; otherwise, when no model
   exists yet, train on simulator history (the cold start; the model card says so).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import msgspec
from django.conf import settings
from django.db import connection
from django.utils import timezone

from learning import store
from monitor import models_cache
from monitor.models import Host, LearnedModel, LifecycleTransition
from sentinel.locks import advisory_lock

log = logging.getLogger(__name__)

HISTORY = timedelta(days=7)
RETRAIN_AFTER_FAILURES = 20  # new failure episodes in the fleet since the active model
# One training at a time in the whole fleet: a cold start takes minutes, and a second check
# due meanwhile would start a second one in another worker slot.
TRAINING_LOCK = (0x5E18, 0)
BUSY = "another worker is training the pattern model"


def train_if_needed(now: datetime) -> str:
    """Train when the model is missing, unloadable or behind the fleet's failures, unless
    another worker is training already; return what was done."""
    with advisory_lock(*TRAINING_LOCK) as free:
        if not free:
            return BUSY
        reason = needs_training(now)
        if reason is None:
            return "the pattern model is current"
        row = train()
    if row is None:
        return f"kept the current model ({reason}): the fleet's history is not enough yet"
    return f"trained pattern model v{row.version} ({reason}): {row.card.get('provenance')}"


def needs_training(now: datetime) -> str | None:
    """Return why a model should be trained now, or None."""
    active = store.active_row()
    if active is None:
        return "no pattern model yet"
    if models_cache.load_pattern_model(active) is None:
        return f"model v{active.version} cannot be loaded by this code"
    new_failures = LifecycleTransition.objects.filter(
        to_state__startswith="failed_", at__gt=active.created_at
    ).count()
    if new_failures >= RETRAIN_AFTER_FAILURES:
        return f"{new_failures} new failures since model v{active.version}"
    # Periodically too: the windows that led nowhere move on with the fleet's traffic.
    checked = max(active.created_at, _kept_at(active) or active.created_at)
    if (now - checked).total_seconds() >= settings.PATTERN_RETRAIN_EVERY_S:
        return f"model v{active.version} last checked against the fleet {checked:%Y-%m-%d %H:%M}"
    return None


def _kept_at(row: LearnedModel) -> datetime | None:
    try:
        return datetime.fromisoformat(str(row.card["kept_at"]))
    except (KeyError, ValueError):
        return None


def train(*, cold_start_workers: int = 1) -> LearnedModel | None:
    """Train and activate a model; return it, or None when nothing better could be trained."""
    from learning import history, patterns

    windows, labels, groups = history.training_set(_histories())
    model = None
    if labels:
        try:
            model = patterns.train(windows, labels, groups=groups,
                                   provenance=f"this fleet's last {HISTORY.days} days")  # fmt: skip
        except patterns.ModelError as exc:
            log.info("the fleet's history is not enough to train on: %s", exc)
    if model is None or not model.types:
        active = store.active_row()
        if active is not None and models_cache.load_pattern_model(active) is not None:
            # Keep the working model until the fleet has seen enough failures; say when that
            # was last checked, so the periodic retraining waits a period before the next try.
            active.card = {**active.card, "kept_at": timezone.now().isoformat()}
            active.save(update_fields=["card"])
            return None
        model = patterns.cold_start(workers=cold_start_workers)
    row = store.save_pattern_model(model)
    models_cache.forget()
    return row


def _histories() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    since = timezone.now() - HISTORY
    for host in Host.objects.all().only("pk", "name"):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT data::text FROM monitor_checkpoint WHERE host_id = %s "
                "AND collected_at >= %s ORDER BY collected_at",
                [host.pk, since],
            )
            checkpoints = [msgspec.json.decode(row[0]) for row in cursor.fetchall()]
        if checkpoints:
            yield f"fleet/{host.name}", checkpoints


__all__ = ["LearnedModel", "needs_training", "train"]
