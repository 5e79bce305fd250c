"""The analysis worker's link to self-healing: the guardrails watch every checkpoint the
analysis takes in, and what fired goes to healing.triggers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from healing import tasks as healing_tasks
from healing import triggers
from healing.models import Proposal
from learning.prediction import Prediction
from mitigations.guardrails import Firing
from monitor.models import Host


class Watch:
    """Collects, per host, the guardrails that fired on a batch."""

    def __init__(self) -> None:
        self.rails = triggers.guardrails()
        self.hosts: dict[int, Host] = {}
        self.firings: dict[int, list[Firing]] = {}

    def observe(
        self, host: Host, checkpoint: dict[str, Any], predictions: Sequence[Prediction]
    ) -> None:
        t = float(checkpoint.get("collected_at") or 0.0)
        found = self.rails.check(host.name, checkpoint, predictions, t)
        self.hosts[host.pk] = host
        self.firings.setdefault(host.pk, []).extend(found)

    def fired(
        self, newest: dict[int, dict[str, Any]]
    ) -> list[tuple[Host, dict[str, Any], list[Firing]]]:
        """Return each host with its newest checkpoint and what fired and still holds."""
        out = []
        for pk, host in self.hosts.items():
            holding = set(self.rails.holding(host.name))
            firings = [f for f in self.firings.get(pk, []) if f.policy.name in holding]
            if pk in newest:
                out.append((host, newest[pk], firings))
        return out


def handle(
    checked: list[tuple[Host, dict[str, Any], list[Firing]]], now: datetime
) -> list[Proposal]:
    return triggers.handle(checked, now, healing_tasks.enqueue_execution)
