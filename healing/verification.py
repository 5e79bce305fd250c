"""Judge an executed proposal once its verification window has passed, and learn from it.

The outcome (mitigations.base.judge) compares the key metrics before and at the end of the
window, and looks for the failure it was meant to prevent in the checkpoints of the window
(learning.history.failures_in: the same labelling the pattern model trains on). The outcome
becomes a label for the learner, and a success resolves the incident.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import msgspec
from django.db import connection, transaction
from django.utils import timezone

from healing import audit, learner_store
from healing.models import Incident, Proposal
from learning.history import failures_in
from learning.labels import context_of
from mitigations.base import Outcome, Recovery, Verification, judge
from mitigations.guardrails import environment

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
    checkpoints = _checkpoints(p.host_id, executed - LOOK_BEFORE, p.verify_until or now)
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
    finish(p, outcome, _figures(after[-1]) if after else {}, last, now)
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
            confidence=_confidence(p, strategy),
            next_context_key=nxt,
            metrics=p.metrics_before,
            proposal=p,
        )
        if outcome == "success":
            Incident.objects.filter(pk=p.incident_id).exclude(state="resolved").update(
                state=Incident.State.RESOLVED, resolved_at=now, updated_at=now
            )
        audit.record(
            None,
            "proposal.verify",
            f"proposal {p.pk} on {p.host.name}",
            outcome,
            strategy=strategy,
            before=p.metrics_before,
            after=metrics_after,
        )


def _confidence(p: Proposal, strategy: str) -> float | None:
    if strategy == p.strategy:
        return p.confidence
    for alt in p.alternatives:
        if alt.get("strategy") == strategy:
            return float(alt.get("confidence") or 0.0)
    return None


def _spec(p: Proposal) -> Verification:
    data = p.plan.get("verification") or {}
    strategy = p.chosen_strategy or p.strategy
    if strategy != p.strategy:
        for alt in p.alternatives:
            if alt.get("strategy") == strategy:
                data = alt["plan"]["verification"]
    return Verification(
        float(data.get("within_s") or 300.0),
        tuple(Recovery(m, op, float(b)) for m, op, b in data.get("recover") or ()),
        tuple(data.get("must_not_happen") or ()),
    )


def _figures(env: dict[str, Any]) -> dict[str, float]:
    return {
        k: round(float(v), 4)
        for k, v in env.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
    }


def _checkpoints(host_id: int, since: datetime, until: datetime) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data::text FROM monitor_checkpoint WHERE host_id = %s "
            "AND collected_at >= %s AND collected_at <= %s ORDER BY collected_at",
            [host_id, since - timedelta(seconds=1), until],
        )
        return [msgspec.json.decode(row[0]) for row in cursor.fetchall()]
