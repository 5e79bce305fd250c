"""The audit log: every decision, execution, pause and policy change, written once."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from healing.models import AuditEntry

SYSTEM = "sentinel"  # the actor of automatic acts


def record(actor: Any, action: str, target: str, reason: str = "", **detail: Any) -> AuditEntry:
    """Write one entry; `actor` is a user, a username, or None for Sentinel itself."""
    name = getattr(actor, "username", None) or (actor if isinstance(actor, str) else SYSTEM)
    return AuditEntry.objects.create(
        at=timezone.now(),
        actor=name,
        action=action,
        target=target[:200],
        reason=(reason or "")[:1000],
        detail=detail,
    )
