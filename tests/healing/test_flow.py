"""Trigger → incident → proposal → decision → execution on a real agent → verification → label."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection

from healing import decisions, execution, expiry, learner_store, verification
from healing.models import AuditEntry, Incident, Label, LearnerState, Proposal
from monitor.models import Host
from simulator.drill import ThreadedFleet
from tests.healing.polling import T0, poll

KV_FULL = {"kv_cache_usage_pct": 99.0, "requests_waiting": 80.0, "requests_running": 200.0}


@pytest.fixture
def host(db: None) -> Host:
    return Host.objects.create(
        name="gpu-01", agent_url="http://127.0.0.1:1", agent_token="t", model_name="llama"
    )


@pytest.mark.django_db
def test_a_guardrail_that_holds_opens_one_incident_and_one_pending_proposal(host: Host) -> None:
    enqueued: list[int] = []
    made = [p for i in range(12) for p in poll(host, T0 + 5 * i, enqueued, **KV_FULL)]
    assert len(made) == 1 and enqueued == []  # nothing is confident before any label
    p = made[0]
    assert p.status == "pending" and p.trigger == "guardrail:kv_cache_near_full"
    assert p.strategy == "lower_max_num_seqs" and p.params == {"max_num_seqs": 150}
    assert p.plan["steps"][0]["action"] == "drain" and p.plan["capacity_cost"] == 1.0
    assert "reset_prefix_cache" in {a["strategy"] for a in p.alternatives}
    assert p.evidence["metrics"]["kv_cache_usage_pct"] == 99.0
    assert "no spare capacity" in p.evidence["not_possible"]["scale_workers"]
    failed_checks = {c["name"] for c in p.gate if not c["ok"]}
    # No history yet; and restarting the fleet's only host would take all of its capacity.
    assert failed_checks == {"confidence", "blast_radius"}
    assert p.deadline_at - p.created_at == timedelta(seconds=600) and p.on_expiry == "escalated"
    incident = Incident.objects.get()
    assert incident.failure_type == "kv_cache_exhausted" and incident.state == "open"
    assert incident.signals[0]["name"] == "guardrail:kv_cache_near_full"


@pytest.mark.django_db
def test_a_proposal_lapses_when_its_trigger_stops_holding(host: Host) -> None:
    made = [p for i in range(12) for p in poll(host, T0 + 5 * i, [], **KV_FULL)]
    for i in range(12, 30):  # healthy for 90 s: the guardrail clears after its 60 s
        poll(host, T0 + 5 * i, [])
    p = Proposal.objects.get(pk=made[0].pk)
    assert p.status == "lapsed"
    assert AuditEntry.objects.filter(action="proposal.lapse").count() == 1


@pytest.mark.django_db
def test_one_decision_per_proposal_and_it_is_a_label(host: Host, alice: Any, bob: Any) -> None:
    (p,) = [p for i in range(12) for p in poll(host, T0 + 5 * i, [], **KV_FULL)]
    started: list[int] = []
    decisions.decide(p.pk, alice, "veto", reason="peak hour", enqueue=started.append)
    with pytest.raises(decisions.DecisionError, match="already decided by alice"):
        decisions.decide(p.pk, bob, "approve", enqueue=started.append)
    assert started == [] and Proposal.objects.get(pk=p.pk).status == "vetoed"
    label = Label.objects.get()
    assert (label.kind, label.strategy, label.context_key) == (
        "vetoed",
        "lower_max_num_seqs",
        "kv_cache_exhausted|serving|queued",
    )
    assert LearnerState.objects.get().labels_applied == label.pk
    entry = AuditEntry.objects.get(action="proposal.veto")
    assert entry.actor == "alice" and entry.reason == "peak hour"


@pytest.mark.django_db
def test_approving_an_alternative_labels_both(host: Host, alice: Any) -> None:
    (p,) = [p for i in range(12) for p in poll(host, T0 + 5 * i, [], **KV_FULL)]
    started: list[int] = []
    alternative = p.alternatives[0]["strategy"]
    with pytest.raises(decisions.DecisionError, match="not an alternative"):
        decisions.decide(p.pk, alice, "alternative", strategy="rm_rf", enqueue=started.append)
    decisions.decide(p.pk, alice, "alternative", strategy=alternative, enqueue=started.append)
    kinds = sorted((label.kind, label.strategy) for label in Label.objects.all())
    assert kinds == sorted([("approved", alternative), ("vetoed", p.strategy)])


@pytest.mark.django_db(transaction=True)
def test_two_operators_at_the_same_moment_get_one_decision(
    host: Host, alice: Any, bob: Any
) -> None:
    (p,) = [p for i in range(12) for p in poll(host, T0 + 5 * i, [], **KV_FULL)]
    barrier, results = threading.Barrier(2), {}

    def click(user: Any) -> None:
        barrier.wait()
        try:
            decisions.decide(p.pk, user, "approve", enqueue=lambda pk: None)
            results[user.username] = "ok"
        except decisions.DecisionError as exc:
            results[user.username] = str(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(u,)) for u in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values())[1] == "ok"
    loser = next(v for v in results.values() if v != "ok")
    winner = next(k for k, v in results.items() if v == "ok")
    assert loser.startswith(f"already decided by {winner}")
    assert Label.objects.filter(kind="approved").count() == 1


@pytest.mark.django_db
def test_deadlines_escalate_disruptive_proposals_and_never_run_them(host: Host) -> None:
    (p,) = [p for i in range(12) for p in poll(host, T0 + 5 * i, [], **KV_FULL)]
    assert expiry.expire_due(p.deadline_at - timedelta(seconds=1)) == []
    assert expiry.expire_due(p.deadline_at) == [p.pk]
    p.refresh_from_db()
    assert p.status == "escalated" and p.started_at is None
    assert Incident.objects.get(pk=p.incident_id).severity == "critical"


@pytest.mark.django_db(transaction=True)
def test_an_approved_proposal_runs_once_on_the_real_agent_and_is_verified(
    sim_fleet: ThreadedFleet, alice: Any
) -> None:
    entry = sim_fleet.fleet.manifest["hosts"][0]
    host = Host.objects.create(
        name=entry["name"],
        agent_url=entry["agent_url"],
        agent_token=entry["token"],
        model_name="llama",
    )
    sim_fleet.advance(30)
    start = time.time() - 60
    (p,) = [p for i in range(12) for p in poll(host, start + 5 * i, [], **KV_FULL)]
    decisions.decide(p.pk, alice, "approve", enqueue=lambda pk: None)

    assert execution.execute(p.pk).startswith(f"proposal {p.pk}: 2 step(s) done")
    # A redelivered task, or a second worker, finds nothing left to do.
    assert execution.execute(p.pk) == f"proposal {p.pk} is not approved: nothing to do"
    p.refresh_from_db()
    assert p.status == "verifying" and [s["action"] for s in p.steps_done] == [
        "drain",
        "restart_with_args",
    ]
    sim_host = sim_fleet.fleet.hosts[0]
    assert sim_host.sim.given.max_num_seqs == 150
    jobs = sim_fleet.run(_jobs(entry))
    assert sorted(j["idempotency_key"] for j in jobs) == [
        f"{p.idempotency_key}:0",
        f"{p.idempotency_key}:1",
    ]

    # A worker that died after the agent ran the steps but before it recorded them: the
    # redelivered task sends them again with the same keys, and the agent runs nothing twice.
    Proposal.objects.filter(pk=p.pk).update(status="executing", steps_done=[])
    assert execution.execute(p.pk).startswith(f"proposal {p.pk}: 2 step(s) done")
    assert len(sim_fleet.run(_jobs(entry))) == 2
    p.refresh_from_db()

    summary, wait = verification.verify(p.pk, now=p.verify_until - timedelta(seconds=1))
    assert summary == "too early" and wait is not None
    done_at = p.executed_at.timestamp()
    for i in range(1, 20):  # after the restart the host serves with a short queue
        poll(host, done_at + 15 * i, [])
    verification.verify(p.pk, now=p.verify_until)
    p.refresh_from_db()
    assert p.status == "done" and p.outcome == "success"
    assert Incident.objects.get(pk=p.incident_id).state == "resolved"
    outcome = Label.objects.get(kind="outcome")
    assert outcome.strategy == "lower_max_num_seqs" and outcome.outcome == "success"
    learner = learner_store.learner()
    assert learner.performance("kv_cache_exhausted")["lower_max_num_seqs"].successes == 1


@pytest.mark.django_db(transaction=True)
def test_a_step_the_agent_refuses_fails_the_proposal_and_teaches_the_learner(
    sim_fleet: ThreadedFleet, alice: Any
) -> None:
    entry = sim_fleet.fleet.manifest["hosts"][0]
    host = Host.objects.create(
        name=entry["name"],
        agent_url=entry["agent_url"],
        agent_token="wrong-token",
        model_name="llama",
    )
    (p,) = [p for i in range(12) for p in poll(host, T0 + 5 * i, [], **KV_FULL)]
    decisions.decide(p.pk, alice, "approve", enqueue=lambda pk: None)
    assert "failed" in execution.execute(p.pk)
    p.refresh_from_db()
    assert p.status == "failed" and "answered 401" in p.error
    assert Label.objects.get(kind="outcome").outcome == "failure"


async def _jobs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    import aiohttp

    headers = {"Authorization": f"Bearer {entry['token']}"}
    async with (
        aiohttp.ClientSession(headers=headers) as s,
        s.get(entry["agent_url"] + "/v1/actions") as r,
    ):
        data = await r.json()
    return list(data["jobs"])
