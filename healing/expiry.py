"""Proposals past their deadline: a low-risk one expires, a disruptive one escalates; none
is executed because nobody answered."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from healing import audit
from healing.models import Incident, Proposal


def expire_due(now: datetime) -> list[int]:
    """Expire or escalate every pending proposal whose deadline has passed; return their ids."""
    done = []
    with transaction.atomic():
        due = (
            Proposal.objects.select_for_update(skip_locked=True)
            .select_related("host")
            .filter(status=Proposal.Status.PENDING, deadline_at__lte=now)
        )
        for p in due:
            p.status, p.decided_at = p.on_expiry, now
            p.decision_reason = "nobody decided before the deadline"
            p.save(update_fields=["status", "decided_at", "decision_reason"])
            if p.on_expiry == Proposal.Status.ESCALATED:  # nobody answered: it is critical now
                Incident.objects.filter(pk=p.incident_id).update(
                    severity="critical", updated_at=now
                )
            audit.record(
                None,
                f"proposal.{p.on_expiry}",
                f"proposal {p.pk} on {p.host.name}",
                f"{p.risk}-risk proposal past its deadline",
                strategy=p.strategy,
            )
            done.append(p.pk)
    return done
