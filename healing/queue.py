"""What the approvals page shows: the pending proposals, the latest decisions, the shadow
record per strategy, the pauses in force. Read-only queries, shared by the view and the
live updates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Q

from healing.models import Pause, Proposal

RECENT = 15


def pending() -> list[Proposal]:
    return list(
        Proposal.objects.select_related("host", "incident")
        .filter(status=Proposal.Status.PENDING)
        .order_by("deadline_at")
    )


def recent() -> list[Proposal]:
    return list(
        Proposal.objects.select_related("host", "decided_by")
        .exclude(status=Proposal.Status.PENDING)
        .order_by("-decided_at", "-created_at")[:RECENT]
    )


def shadow_record() -> list[dict[str, Any]]:
    """Per strategy: how often shadow mode would have acted, and operators approved those."""
    rows = (
        Proposal.objects.filter(would_auto=True)
        .values("strategy")
        .annotate(
            would=Count("pk"),
            approved=Count(
                "pk",
                filter=Q(chosen_strategy__isnull=False)
                & ~Q(chosen_strategy="")
                & ~Q(status__in=["vetoed", "pending", "lapsed", "expired", "escalated"]),
            ),
            decided=Count(
                "pk", filter=~Q(status__in=["pending", "lapsed", "expired", "escalated"])
            ),
        )
        .order_by("strategy")
    )
    return list(rows)


def pauses(now: datetime) -> list[Pause]:
    return list(Pause.objects.select_related("owner").filter(until__gt=now))
