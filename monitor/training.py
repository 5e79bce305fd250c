"""Train the pattern model on the fleet's own history, or on the simulator's before it has any.

1. Read each host's recent checkpoints (the retention window at most), a piece at a time.
2. Label them from what they say: failed states, classified errors, GPU faults, storms
   (learning/history.py), the same way for every fleet; keep every window a failure followed
   and a bounded number of the others, as feature rows.
3. Train when the fleet has seen enough failures of some type; otherwise, when no model
   exists yet, train on simulator history (the cold start; the model card says so).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils import timezone

from learning import history, store
from learning.features import FEATURE_NAMES
from learning.history import Label
from learning.prediction import DEFAULT_HORIZON_S
from monitor import models_cache
from monitor.analysis import recent_checkpoints
from monitor.models import LearnedModel, LifecycleTransition
from sentinel.locks import advisory_lock

log = logging.getLogger(__name__)

HISTORY = timedelta(days=7)
RETRAIN_AFTER_FAILURES = 20  # new failure episodes in the fleet since the active model
# A fit on 10,000 windows takes seconds, on a fleet's every 10 s of a week hours: the windows
# no failure followed are thinned to about this many, spread evenly over the fleet's history.
MAX_QUIET_WINDOWS = 20_000
PIECE_S = 6 * 3600.0  # a host's history is read this much at a time
# One training at a time in the whole fleet: a cold start takes minutes, and a second check
# due meanwhile would start a second one in another worker slot.
TRAINING_LOCK = (0x5E18, 0)
BUSY = "another worker is training the pattern model"


def train_if_needed(now: datetime, *, always: bool = False) -> str:
    """Train when the model is missing, unloadable, behind the fleet's failures or due (or
    `always`), unless another worker is training already; return what was done."""
    with advisory_lock(*TRAINING_LOCK) as free:
        if not free:
            return BUSY
        reason = "asked to" if always else needs_training(now)
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
    from learning import patterns

    model = None
    x, ends, labels, groups = _training_rows()
    if labels:
        try:
            model = patterns.train_rows(
                x, ends, labels, groups=groups, provenance=f"this fleet's last {HISTORY.days} days"
            )
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


def _training_rows() -> tuple[np.ndarray, list[float], list[Label], list[str]]:
    """Return the feature rows, end times, labels and hosts of the fleet's recent windows:
    every one a failure followed, and as many others as MAX_QUIET_WINDOWS, spread evenly.

    A week of one host's checkpoints is ~1.7 GB as Python objects, and a fit on every 10 s
    of a fleet's week would take hours: each host is read PIECE_S at a time, and only its
    windows' features are kept."""
    spans = _host_spans(timezone.now() - HISTORY)
    served_s = sum(last - first for _, _, first, last in spans)
    quiet_every_s = max(10.0, served_s / MAX_QUIET_WINDOWS)
    xs, ends, labels, groups = [], [], [], []
    for host_id, name, first, last in spans:
        for since in np.arange(first, last + 1e-3, PIECE_S).tolist():
            until = since + PIECE_S
            checkpoints = recent_checkpoints(host_id, since - history.PIECE_BEFORE_S,
                                             until + DEFAULT_HORIZON_S)  # fmt: skip
            x, e, lb = history.labelled_rows(checkpoints, since=since, until=until,
                                             quiet_every_s=quiet_every_s)  # fmt: skip
            xs.append(x)
            ends += e
            labels += lb
            groups += [f"fleet/{name}"] * len(e)
    x = np.vstack(xs) if xs else np.empty((0, len(FEATURE_NAMES)))
    return x, ends, labels, groups


def _host_spans(since: datetime) -> list[tuple[int, str, float, float]]:
    """Return each host's id, name and first and last checkpoint time since `since`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT h.id, h.name, extract(epoch FROM min(c.collected_at)), "
            "extract(epoch FROM max(c.collected_at)) FROM monitor_host h "
            "JOIN monitor_checkpoint c ON c.host_id = h.id WHERE c.collected_at >= %s "
            "GROUP BY h.id, h.name ORDER BY h.id",
            [since],
        )
        return [(pk, name, float(first), float(last)) for pk, name, first, last in cursor]


__all__ = ["LearnedModel", "needs_training", "train"]
