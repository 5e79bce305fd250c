"""Save and load learned models in the database (a thin Django adapter; the models are pure).

A saved model keeps its MODEL_FORMAT and scikit-learn version; one saved by other code is
refused by learning.patterns.loads and the learner retrains rather than guess.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import Max

from monitor.models import LearnedModel

KIND = "patterns"


def save_pattern_model(model: Any) -> LearnedModel:
    """Store `model` as the next version and make it the active one."""
    from learning import patterns

    with transaction.atomic():
        latest = (
            LearnedModel.objects.select_for_update().filter(kind=KIND).aggregate(Max("version"))
        )
        version = (latest["version__max"] or 0) + 1
        model.version = version
        LearnedModel.objects.filter(kind=KIND, active=True).update(active=False)
        return LearnedModel.objects.create(
            kind=KIND,
            version=version,
            model_format=model.model_format,
            library_version=model.sklearn_version,
            created_at=datetime.now(tz=UTC),
            card=_json_ready(model.card),
            blob=patterns.dumps(model),
            active=True,
        )


def active_row() -> LearnedModel | None:
    return LearnedModel.objects.filter(kind=KIND, active=True).defer("blob").first()


def _json_ready(value: Any) -> Any:
    """Return the card as plain JSON: numpy scalars as numbers, NaN and infinities as null
    (PostgreSQL's json refuses them; "not measured" is what they mean on a card)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
