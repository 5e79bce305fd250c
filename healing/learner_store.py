"""The learner's state in the database: loaded once per process, kept current with the labels.

Each worker keeps its ContinuousLearningSystem and applies the labels stored since (by id), so
every process ranks with everything learnt, and a restart loses nothing. `learn()` stores a
label and saves the state under a row lock, so two workers never overwrite each other.
"""

from __future__ import annotations

from django.db import transaction

from healing.models import Label, LearnerState
from learning import labels as plain
from learning.continuous import ContinuousLearningSystem
from learning.prediction import RECOMMENDED_MITIGATIONS

_cached: tuple[ContinuousLearningSystem, int] | None = None  # (learner, last label id applied)


def learner() -> ContinuousLearningSystem:
    """Return this process's learner with every stored label applied."""
    global _cached
    if _cached is None:
        row = LearnerState.objects.first()
        if row is not None and row.state:
            try:
                _cached = (ContinuousLearningSystem.from_dict(row.state), row.labels_applied)
            except (ValueError, TypeError, KeyError):
                _cached = None  # another format: relearn from the labels below
        if _cached is None:
            _cached = (ContinuousLearningSystem(RECOMMENDED_MITIGATIONS), 0)
    system, last = _cached
    for row in Label.objects.filter(pk__gt=last).order_by("pk"):
        system.learn(to_plain(row))
        last = row.pk
    _cached = (system, last)
    return system


def learn(**fields: object) -> Label:
    """Store a label and fold it into the saved state (and this process's learner)."""
    with transaction.atomic():
        row = Label.objects.create(**fields)
        state = LearnerState.objects.select_for_update().first() or LearnerState.objects.create()
        system = learner()  # applies every label up to this one
        state.state, state.labels_applied = system.to_dict(), row.pk
        state.save(update_fields=["state", "labels_applied", "updated_at"])
    return row


def forget_cache() -> None:
    global _cached
    _cached = None


def to_plain(row: Label) -> plain.Label:
    nxt = plain.LearningContext.from_key(row.next_context_key) if row.next_context_key else None
    return plain.Label(
        kind=row.kind,
        context=plain.LearningContext.from_key(row.context_key),
        strategy=row.strategy,
        at=row.at.timestamp(),
        outcome=row.outcome or None,
        execution_s=row.execution_s,
        confidence=row.confidence,
        next_context=nxt,
        auto_agreed=row.auto_agreed,
    )
