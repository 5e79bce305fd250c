"""Execute an approved proposal exactly once, then hand it to verification.

Exactly once, even when a task is redelivered or a worker dies mid-way:
- a PostgreSQL advisory lock per proposal: a second task for it finds the lock taken and
  leaves (a dead worker's connection closes, which frees the lock for a redelivery);
- each step goes to the agent with the key `<proposal key>:<step>`: a step resent after a
  crash is answered with its first job instead of running again;
- the steps done are stored one by one, so a redelivery resumes after the last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from healing import audit, verification
from healing.agent_actions import AgentActionError, run_action
from healing.models import Proposal
from monitor.models import Host
from sentinel.locks import advisory_lock

LOCK_SPACE = 0x5E17  # advisory-lock namespace for proposals


def execute(proposal_id: int, clock: Callable[[], datetime] = timezone.now) -> str:
    """Run the proposal's steps; `clock` gives the time (a simulated fleet has its own)."""
    with advisory_lock(LOCK_SPACE, proposal_id) as got:
        if not got:
            return f"proposal {proposal_id} is being executed by another worker"
        claimed = _claim(proposal_id, clock())
        if claimed is None:
            return f"proposal {proposal_id} is not approved: nothing to do"
        return _run(claimed, clock)


def _claim(proposal_id: int, now: datetime) -> Proposal | None:
    """Move an approved proposal to executing (or take up one a dead worker left executing)."""
    with transaction.atomic():
        p = Proposal.objects.select_for_update().select_related("host").get(pk=proposal_id)
        if p.status == Proposal.Status.APPROVED:
            p.status, p.started_at = Proposal.Status.EXECUTING, now
            p.save(update_fields=["status", "started_at"])
            return p
        return p if p.status == Proposal.Status.EXECUTING else None


def _run(p: Proposal, clock: Callable[[], datetime]) -> str:
    steps = list(p.chosen()["plan"].get("steps") or [])
    done = list(p.steps_done)
    for i, step in enumerate(steps[len(done) :], start=len(done)):
        host = _host_for(p, step)
        key = f"{p.idempotency_key}:{i}"
        try:
            job = asyncio.run(
                run_action(
                    host.agent_url, host.agent_token, step["action"], step.get("params") or {}, key
                )
            )
        except AgentActionError as exc:
            return _failed(
                p, done, f"step {i + 1} ({step['action']} on {host.name}): {exc}", clock()
            )
        done.append(
            {
                "step": i,
                "action": step["action"],
                "host": host.name,
                "job": job.get("id"),
                "result": job.get("result"),
                "finished_at": job.get("finished_at"),
            }
        )
        Proposal.objects.filter(pk=p.pk).update(steps_done=done)
    return _executed(p, done, clock())


def _host_for(p: Proposal, step: dict[str, Any]) -> Host:
    return Host.objects.get(name=step["host"]) if step.get("host") else p.host


def _executed(p: Proposal, done: list[dict[str, Any]], now: datetime) -> str:
    within = float(p.chosen()["plan"].get("verification", {}).get("within_s") or 300.0)
    Proposal.objects.filter(pk=p.pk).update(
        status=Proposal.Status.VERIFYING,
        steps_done=done,
        executed_at=now,
        verify_until=now + timedelta(seconds=within),
    )
    audit.record(
        None,
        "proposal.execute",
        f"proposal {p.pk} on {p.host.name}",
        f"{len(done)} step(s) done",
        strategy=p.chosen_strategy or p.strategy,
        steps=done,
    )
    return f"proposal {p.pk}: {len(done)} step(s) done, verifying for {within:.0f} s"


def _failed(p: Proposal, done: list[dict[str, Any]], error: str, now: datetime) -> str:
    Proposal.objects.filter(pk=p.pk).update(
        status=Proposal.Status.FAILED,
        steps_done=done,
        error=error[:1000],
        executed_at=now,
    )
    audit.record(None, "proposal.execute_failed", f"proposal {p.pk} on {p.host.name}", error)
    p.status = Proposal.Status.FAILED
    verification.finish(p, "failure", {}, None, now)
    return f"proposal {p.pk} failed: {error}"
