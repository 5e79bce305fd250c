"""Judge an executed proposal once its verification window has passed, and learn from it.

The outcome (mitigations.base.judge) compares the key metrics before and at the end of the
window, and looks for the failure it was meant to prevent in the checkpoints of the window
(learning.history.failures_in: the same labelling the pattern model trains on). The outcome
becomes a label for the learner, and a success resolves the incident.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from healing import audit, incidents, learner_store
from healing.models import Proposal
from learning.history import failures_in
from learning.labels import context_of
from mitigations.base import Outcome, Recovery, Verification, judge
from mitigations.guardrails import environment, figures
from monitor.analysis import recent_checkpoints

LOOK_BEFORE = timedelta(seconds=300)


def verify(proposal_id: int, now: datetime | None = None) -> tuple[str, float | None]:
    """Judge the proposal if its window has passed; return (what happened, seconds to wait)."""
    now = now or timezone.now()
    p = Proposal.objects.select_related("host", "incident").get(pk=proposal_id)
    if p.status != Proposal.Status.VERIFYING:
        return f"proposal {p.pk} is {p.status}: nothing to verify", None
    if p.verify_until and now < p.verify_until:
        return "too early", (p.verify_until - now).total_seconds()
    executed = p.executed_at or now
    # From a while before the steps: a failure already going on when they ran is the one they
    # answered, not a new one (the episode then starts before them and is not counted).
    until = (p.verify_until or now).timestamp() + 0.001
    checkpoints = recent_checkpoints(p.host_id, (executed - LOOK_BEFORE).timestamp(), until)
    spec = _spec(p)
    failures = [
        f.failure_type for f in failures_in(checkpoints) if f.started_at >= executed.timestamp()
    ]
    window = [
        cp for cp in checkpoints if float(cp.get("collected_at") or 0) >= executed.timestamp()
    ]
    after = [environment(cp) for cp in window[-3:]]
    outcome = judge(spec, p.metrics_before, after, failures, executed=True)
    last = window[-1] if window else None
    finish(p, outcome, figures(window[-1]) if window else {}, last, now)
    return f"proposal {p.pk}: {outcome}", None


def finish(
    p: Proposal,
    outcome: Outcome | str,
    metrics_after: dict[str, float],
    last_checkpoint: dict[str, Any] | None,
    now: datetime,
) -> None:
    """Record the outcome, label it for the learner, resolve the incident after a success."""
    outcome = str(outcome)
    strategy = p.chosen_strategy or p.strategy
    nxt = ""
    if outcome != "success" and last_checkpoint is not None:
        nxt = context_of(last_checkpoint, p.incident.failure_type).key
    with transaction.atomic():
        status = (
            Proposal.Status.FAILED if p.status == Proposal.Status.FAILED else Proposal.Status.DONE
        )
        Proposal.objects.filter(pk=p.pk).update(
            status=status, outcome=outcome, metrics_after=metrics_after
        )
        started = p.started_at or p.decided_at or now
        learner_store.learn(
            kind="outcome",
            context_key=p.context_key,
            strategy=strategy,
            at=now,
            outcome=outcome,
            execution_s=((p.executed_at or now) - started).total_seconds(),
            confidence=p.chosen()["confidence"],
            next_context_key=nxt,
            metrics=p.metrics_before,
            proposal=p,
        )
        if outcome == "success":
            incidents.resolve(p.incident_id, None, "", now, why=f"{strategy} worked (verified)")
        audit.record(
            None,
            "proposal.verify",
            f"proposal {p.pk} on {p.host.name}",
            outcome,
            strategy=strategy,
            before=p.metrics_before,
            after=metrics_after,
        )


def _spec(p: Proposal) -> Verification:
    data = p.chosen()["plan"].get("verification") or {}
    return Verification(
        float(data.get("within_s") or 300.0),
        tuple(Recovery(m, op, float(b)) for m, op, b in data.get("recover") or ()),
        tuple(data.get("must_not_happen") or ()),
    )
