"""The audit log: every decision, execution, pause and policy change, written once."""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone

from healing.models import AuditEntry

SYSTEM = "sentinel"  # the actor of automatic acts
SECRET_MASK = "********"  # in place of a secret's value (an agent token, a password hash)


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


def masked(row: dict[str, Any], secret_fields: tuple[str, ...]) -> dict[str, Any]:
    """Return `row` fit for an entry's detail: secrets masked (empty ones stay empty), related
    rows by name, dates and other values JSON cannot hold as text."""
    return {
        k: (SECRET_MASK if v else "") if k in secret_fields else jsonable(v) for k, v in row.items()
    }


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
