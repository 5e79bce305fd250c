"""The default guardrails and per-strategy settings, loaded once (by a migration)."""

from __future__ import annotations

from typing import Any

from mitigations.guardrails import DEFAULT_POLICIES
from mitigations.registry import STRATEGIES


def load(policy_model: Any, setting_model: Any) -> None:
    """Create what is missing; never overwrite what an admin changed."""
    for data in DEFAULT_POLICIES:
        policy_model.objects.get_or_create(name=data["name"], defaults=dict(data))
    for name, strategy in STRATEGIES.items():
        # Nothing runs by itself before the learner is confident; high-risk strategies never
        # do until an admin enables them.
        setting_model.objects.get_or_create(
            strategy=name, defaults={"auto_enabled": str(strategy.risk) != "high"}
        )
