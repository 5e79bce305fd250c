"""The predictor's shared inputs, cached per process: the active pattern model and the fleet's
state graph. Both are refreshed from the database now and then, not on every checkpoint."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.utils import timezone

from learning.state_graph import StateGraph, StateModel
from monitor.models import LearnedModel, LifecycleTransition

log = logging.getLogger(__name__)

MODEL_CHECK_EVERY_S = 60.0
GRAPH_REBUILD_EVERY_S = 300.0
GRAPH_HISTORY = timedelta(days=30)

_model: dict[str, Any] = {"checked_at": -1e18, "id": None, "model": None}
_graph: dict[str, Any] = {"built_at": -1e18, "model": None}


def pattern_model() -> Any | None:
    """Return the active pattern model, or None (no model yet, or one this code cannot load)."""
    if time.monotonic() - _model["checked_at"] < MODEL_CHECK_EVERY_S:
        return _model["model"]
    _model["checked_at"] = time.monotonic()
    row = LearnedModel.objects.filter(kind="patterns", active=True).only("id").first()
    if row is None or row.pk == _model["id"]:
        return _model["model"] if row else None
    _model["id"], _model["model"] = row.pk, load_pattern_model(row)
    return _model["model"]


def load_pattern_model(row: LearnedModel) -> Any | None:
    from learning import patterns

    try:
        return patterns.loads(bytes(LearnedModel.objects.get(pk=row.pk).blob))
    except patterns.ModelError as exc:
        # Another format or scikit-learn version: never guess; the learner retrains.
        log.warning("pattern model v%s not loaded: %s", row.pk, exc)
        return None


def state_graph() -> StateModel | None:
    """Return the fleet's lifecycle model, rebuilt from its transitions every few minutes."""
    if time.monotonic() - _graph["built_at"] < GRAPH_REBUILD_EVERY_S:
        return _graph["model"]
    _graph["built_at"] = time.monotonic()
    _graph["model"] = fleet_graph().model(timezone.now().timestamp())
    return _graph["model"]


def fleet_graph(host_id: int | None = None) -> StateGraph:
    """Return the transitions of the fleet (or of one host) as a StateGraph."""
    rows = LifecycleTransition.objects.filter(at__gte=timezone.now() - GRAPH_HISTORY)
    if host_id is not None:
        rows = rows.filter(host_id=host_id)
    graph = StateGraph()
    for host, at, from_state, to_state in rows.order_by("at").values_list(
        "host__name", "at", "from_state", "to_state"
    ):
        graph.add((host, at.timestamp(), from_state, to_state))
    return graph


def forget() -> None:
    """Drop the cached model and graph (tests, and after training a new model)."""
    _model.update(checked_at=-1e18, id=None, model=None)
    _graph.update(built_at=-1e18, model=None)
