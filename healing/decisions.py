"""An operator's decision on a proposal: exactly one per proposal, audited, and a label.

Two operators who click at the same moment: the row lock lets one through; the other finds
the proposal decided and is told by whom.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from healing import audit, learner_store
from healing.models import Proposal

CHOICES = ("approve", "veto", "alternative")


class DecisionError(Exception):
    """The decision cannot be taken; the message says why, for the operator."""


def decide(
    proposal_id: int,
    user: object,
    choice: str,
    *,
    strategy: str = "",
    reason: str = "",
    enqueue: Callable[[int], None],
    now: datetime | None = None,
) -> Proposal:
    """Approve, veto, or approve an alternative; `enqueue(id)` starts an approved execution."""
    if choice not in CHOICES:
        raise DecisionError(f"choice must be one of {', '.join(CHOICES)}")
    now = now or timezone.now()
    with transaction.atomic():
        # decided_by is read after the lock, not joined: a join would show the row as it was
        # before a decision that committed while this one waited.
        p = (
            Proposal.objects.select_for_update(of=("self",))
            .select_related("host")
            .get(pk=proposal_id)
        )
        if p.status != Proposal.Status.PENDING:
            raise DecisionError(_already(p))
        chosen = _chosen(p, choice, strategy)
        p.status = Proposal.Status.VETOED if choice == "veto" else Proposal.Status.APPROVED
        p.decided_by, p.decided_at = user, now  # type: ignore[assignment]
        p.decision_reason, p.chosen_strategy = reason[:500], chosen
        p.save(
            update_fields=[
                "status",
                "decided_by",
                "decided_at",
                "decision_reason",
                "chosen_strategy",
            ]
        )
        _label(p, choice, chosen, now)
        audit.record(
            user,
            f"proposal.{choice}",
            f"proposal {p.pk} on {p.host.name}",
            reason,
            strategy=chosen,
            proposed=p.strategy,
            params=p.params,
        )
        if p.status == Proposal.Status.APPROVED:
            transaction.on_commit(lambda: enqueue(p.pk))
    return p


def _chosen(p: Proposal, choice: str, strategy: str) -> str:
    if choice != "alternative":
        return p.strategy
    names = [a.get("strategy") for a in p.alternatives]
    if strategy not in names:
        raise DecisionError(
            f"{strategy!r} is not an alternative of this proposal: {', '.join(names)}"
        )
    return strategy


def _label(p: Proposal, choice: str, chosen: str, now: datetime) -> None:
    """A veto is a preference against the proposed strategy; an approval (of it or of an
    alternative) one for the chosen strategy, and against the proposed one when it differs."""
    base = {"context_key": p.context_key, "at": now, "metrics": p.metrics_before, "proposal": p}
    if choice == "veto":
        learner_store.learn(kind="vetoed", strategy=p.strategy, confidence=p.confidence, **base)
        return
    learner_store.learn(kind="approved", strategy=chosen, **base)
    if chosen != p.strategy:
        learner_store.learn(kind="vetoed", strategy=p.strategy, confidence=p.confidence, **base)


def _already(p: Proposal) -> str:
    if p.decided_by is not None:
        when = timezone.localtime(p.decided_at).strftime("%H:%M:%S") if p.decided_at else ""
        return f"already decided by {p.decided_by.username} ({p.status}) {when}".strip()
    if p.auto:
        return "already approved automatically by Sentinel"
    return f"no longer waiting for a decision: it is {p.status}"
