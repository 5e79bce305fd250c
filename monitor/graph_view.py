"""The lifecycle state graph as the pages draw it: the fleet's model, one host's place in it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from learning.prediction import DEFAULT_HORIZON_S
from monitor import models_cache
from monitor.models import Host


def graph_for_drawing(host: Host | None, now: datetime) -> dict[str, Any]:
    """Return nodes, edges, the host's current state and the likeliest ways to failure."""
    model = models_cache.fleet_graph().model(now.timestamp())
    current, elapsed = None, None
    if host is not None:
        current = host.lifecycle_state
        last = host.transitions.order_by("-at").first()
        elapsed = (now - last.at).total_seconds() if last else None
    graph = model.export(DEFAULT_HORIZON_S, current_state=current, elapsed_s=elapsed)
    for node in graph["nodes"]:
        node["paths"] = _top_paths(model, node["state"])
        recovery = model.recovery(node["state"], DEFAULT_HORIZON_S)
        node["recovery"] = (
            None
            if recovery is None
            else {
                "states": list(recovery.path.states),
                "probability_within_horizon": recovery.probability_within_horizon,
                "expected_duration_s": recovery.path.expected_duration_s,
            }
        )
    return graph


def _top_paths(model: Any, state: str, limit: int = 3) -> list[dict[str, Any]]:
    paths = [p for ways in model.failure_paths(state, k=1).values() for p in ways]
    paths.sort(key=lambda p: p.probability, reverse=True)
    return [
        {"states": list(p.states), "probability": p.probability,
         "expected_duration_s": p.expected_duration_s}
        for p in paths[:limit]
    ]  # fmt: skip
