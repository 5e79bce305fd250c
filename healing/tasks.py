from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from healing import execution, expiry, verification
from monitor import live

VERIFY_RETRY_S = 5.0


@shared_task(acks_late=True, reject_on_worker_lost=True)
def execute_proposal(proposal_id: int) -> str:
    """Run an approved proposal's steps on the agent(s); exactly once (healing/execution.py)."""
    summary = execution.execute(proposal_id)
    live.proposals_changed([proposal_id])
    verify_proposal.apply_async((proposal_id,), countdown=VERIFY_RETRY_S)
    return summary


@shared_task(acks_late=True)
def verify_proposal(proposal_id: int) -> str:
    summary, wait_s = verification.verify(proposal_id)
    if wait_s is not None:
        verify_proposal.apply_async((proposal_id,), countdown=min(max(wait_s, 1.0), 60.0))
    else:
        live.proposals_changed([proposal_id])
    return summary


@shared_task(expires=9)
def expire_proposals() -> str:
    done = expiry.expire_due(timezone.now())
    if done:
        live.proposals_changed(done)
    return f"{len(done)} proposals expired or escalated"


def enqueue_execution(proposal_id: int) -> None:
    execute_proposal.apply_async((proposal_id,))
