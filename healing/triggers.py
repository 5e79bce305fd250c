"""From what the analysis found to incidents and proposals.

Called by the analysis worker after each batch (monitor/analysis.py): every guardrail that
fires and every open prediction opens or joins the incident of its host and failure type;
an incident without a live proposal gets one (mitigations/proposals.py), which the gate
either approves at once (then it is executed: healing.tasks.execute_proposal) or leaves for
an operator. Pending proposals whose trigger stopped holding lapse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from healing import audit, fleet_state, incidents, learner_store
from healing.models import GuardrailPolicy, Incident, Proposal
from learning.hysteresis import OPEN_AT
from mitigations.base import Context
from mitigations.guardrails import Firing, Guardrails, Policy, figures
from mitigations.proposals import Draft, draft
from monitor.models import Host
from monitor.models import Prediction as PredictionRow

log = logging.getLogger(__name__)

LIVE = ("pending", "approved", "executing", "verifying")
GATE_LOCK = 0x5E17_6A7E


@dataclass(frozen=True, slots=True)
class Trigger:
    host: Host
    failure_type: str
    severity: str
    name: str  # "guardrail:<policy>" or "prediction:<id>"
    interventions: tuple[str, ...]
    detail: str
    since: float  # epoch s of the first checkpoint that showed it


# ---------------------------------------------------------------- guardrails, per process

_rails: tuple[tuple[Any, ...], Guardrails] | None = None


def guardrails() -> Guardrails:
    """Return this process's guardrails, rebuilt when an admin changed the policies."""
    global _rails
    rows = list(GuardrailPolicy.objects.filter(enabled=True))
    version = tuple(sorted((r.pk, r.updated_at.timestamp()) for r in rows))
    if _rails is None or _rails[0] != version:
        policies = []
        for r in rows:
            try:
                policies.append(
                    Policy(
                        r.name,
                        r.condition,
                        r.failure_type,
                        tuple(r.interventions),
                        r.severity,
                        r.hold_s,
                        r.clear_s,
                    )
                )
            except ValueError as exc:  # saved before a vocabulary change: skip, say so
                log.warning("guardrail %s is not valid and is skipped: %s", r.name, exc)
        old = _rails[1] if _rails else None
        _rails = (version, Guardrails(policies))
        if old is not None:
            _rails[1].adopt(old)
    return _rails[1]


# ---------------------------------------------------------------- the batch


def handle(
    checked: Sequence[tuple[Host, dict[str, Any], list[Firing]]],
    now: datetime,
    enqueue: Callable[[int], None],
) -> list[Proposal]:
    """Open or join incidents for what fired, propose, and lapse what no longer holds.

    `checked` is each analysed host with its newest checkpoint (dict) and the guardrails that
    fired on it; `enqueue(proposal_id)` starts an approved proposal's execution."""
    hosts = {host.pk: (host, cp) for host, cp, _ in checked}
    triggers = [_from_firing(host, f) for host, _, firings in checked for f in firings]
    triggers += _from_predictions([h for h, _ in hosts.values()])
    created = []
    for trigger in triggers:
        proposal = _open(trigger, hosts[trigger.host.pk][1], now)
        if proposal is not None:
            created.append(proposal)
            if proposal.status == Proposal.Status.APPROVED:
                transaction.on_commit(lambda pk=proposal.pk: enqueue(pk))
    _lapse(list(hosts), triggers, now)
    _resolve_quiet(list(hosts), now)
    return created


def _resolve_quiet(host_ids: list[int], now: datetime) -> None:
    """Resolve the incidents of serving hosts that no signal has joined for INCIDENT_QUIET_S
    and that have nothing in flight: the host has been healthy that long."""
    quiet = now - timedelta(seconds=getattr(settings, "INCIDENT_QUIET_S", 600.0))
    rows = (
        Incident.objects.filter(host_id__in=host_ids, last_signal_at__lte=quiet,
                                host__lifecycle_state="serving")
        .exclude(state=Incident.State.RESOLVED)
        .exclude(proposals__status__in=LIVE)
        .values_list("pk", flat=True)
    )  # fmt: skip
    for pk in list(rows):
        incidents.resolve(pk, None, "", now, why="no signal for the quiet time and the host serves")


def _from_firing(host: Host, firing: Firing) -> Trigger:
    p = firing.policy
    return Trigger(
        host,
        p.failure_type,
        p.severity,
        f"guardrail:{p.name}",
        p.interventions,
        p.description or p.condition,
        firing.since,
    )


def _from_predictions(hosts: list[Host]) -> list[Trigger]:
    by_pk = {h.pk: h for h in hosts}
    rows = PredictionRow.objects.filter(
        host_id__in=list(by_pk), closed_at__isnull=True, probability__gte=OPEN_AT
    )
    return [
        Trigger(
            by_pk[r.host_id],
            r.failure_type,
            "critical" if (r.time_to_failure_s or 1e9) <= 300 else "warning",
            f"prediction:{r.pk}",
            tuple(r.recommended_mitigations),
            f"{r.failure_type} predicted, p={r.probability:.2f}",
            r.first_predicted_at.timestamp(),
        )
        for r in rows
    ]


def _open(trigger: Trigger, checkpoint: dict[str, Any], now: datetime) -> Proposal | None:
    """Open or join the incident; return a new proposal when the incident had no live one."""
    with transaction.atomic():
        # One proposal at a time, fleet-wide: the gate's budget counts the proposals approved
        # a moment ago, including those of another analysis worker.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [GATE_LOCK])
        incident = _incident(trigger, now)
        # One mitigation at a time per host: a second incident of the same episode (a hang,
        # then the engine's death) joins the wait instead of restarting the host again.
        if Proposal.objects.filter(host=trigger.host, status__in=LIVE).exists():
            return None
        if _recently_proposed(incident, trigger, now):
            return None
        return _propose(incident, trigger, checkpoint, now)


def _incident(trigger: Trigger, now: datetime) -> Incident:
    signal = {
        "kind": trigger.name.split(":")[0],
        "name": trigger.name,
        "at": now.timestamp(),
        "detail": trigger.detail,
    }
    return incidents.open_or_join(trigger.host, trigger.failure_type, trigger.severity, signal, now)


def _recently_proposed(incident: Incident, trigger: Trigger, now: datetime) -> bool:
    """A vetoed, lapsed or expired proposal is not re-made at once for the same incident."""
    return incident.proposals.filter(
        status__in=["vetoed", "lapsed", "expired", "escalated"],
        decided_at__gte=now - timedelta(minutes=5),
    ).exists()


def _propose(
    incident: Incident, trigger: Trigger, cp: dict[str, Any], now: datetime
) -> Proposal | None:
    host = trigger.host
    ctx = Context(cp, trigger.failure_type, spare_hosts=_spare_hosts(host))
    d = draft(
        ctx,
        learner_store.learner(),
        fleet_state.gate_settings(),
        fleet_state.fleet_state(now),
        now.timestamp(),
        preferred=trigger.interventions,
        explore=getattr(settings, "HEALING_EXPLORE", True),
    )
    if d is None:
        return None
    gate = d.gate
    if gate.host_breaker_open:
        gate = type(gate)(False, False, gate.checks, True)  # the breaker sends it to an operator
    proposal = Proposal.objects.create(
        incident=incident,
        host=host,
        trigger=trigger.name,
        strategy=d.best.plan.strategy,
        params=d.best.plan.params,
        plan=_plan_json(d.best.plan),
        risk=d.best.risk,
        confidence=round(d.best.recommendation.confidence, 4),
        alternatives=[_option_json(o) for o in d.alternatives],
        evidence=_evidence(trigger, cp, d),
        context_key=d.context.key,
        gate=[{"name": c.name, "ok": c.ok, "detail": c.detail} for c in gate.checks],
        status=Proposal.Status.APPROVED if gate.auto else Proposal.Status.PENDING,
        auto=gate.auto,
        would_auto=gate.shadow,
        on_expiry=d.on_expiry,
        created_at=now,
        deadline_at=now + timedelta(seconds=d.deadline_s),
        decided_at=now if gate.auto else None,
        chosen_strategy=d.best.plan.strategy if gate.auto else "",
        metrics_before=figures(cp),
    )
    if gate.auto:
        audit.record(
            None,
            "proposal.auto_approve",
            f"proposal {proposal.pk} on {host.name}",
            f"confidence {proposal.confidence:.2f}; every safety check passed",
            strategy=proposal.strategy,
            params=proposal.params,
        )
    return proposal


def _spare_hosts(host: Host) -> list[dict[str, Any]]:
    rows = Host.objects.filter(enabled=True, lifecycle_state="sleeping").exclude(pk=host.pk)
    return [{"host": h.name, "model": h.model_name, "state": "sleeping"} for h in rows]


def _plan_json(plan: Any) -> dict[str, Any]:
    return {
        "steps": [{"action": s.action, "params": s.params, "host": s.host} for s in plan.steps],
        "capacity_cost": plan.capacity_cost,
        "duration_s": plan.duration_s,
        "reason": plan.reason,
        "verification": {
            "within_s": plan.verification.within_s,
            "recover": [[r.metric, r.op, r.bound] for r in plan.verification.recover],
            "must_not_happen": list(plan.verification.must_not_happen),
            "text": plan.verification.describe(),
        },
    }


def _option_json(option: Any) -> dict[str, Any]:
    r = option.recommendation
    return {
        "strategy": option.plan.strategy,
        "risk": option.risk,
        "confidence": round(r.confidence, 4),
        "why": r.why,
        "params": option.plan.params,
        "plan": _plan_json(option.plan),
    }


def _evidence(trigger: Trigger, cp: dict[str, Any], d: Draft) -> dict[str, Any]:
    return {
        "trigger": trigger.name,
        "detail": trigger.detail,
        "trigger_since": trigger.since,
        "metrics": figures(cp),
        "errors": [e.get("message") for e in (cp.get("errors") or [])][-3:],
        "forecast": _forecast(trigger.host),
        "why": d.best.recommendation.why,
        "not_possible": d.not_possible,
    }


def _forecast(host: Host) -> list[str]:
    """The host's forecast threshold crossings, in words: what the operator is racing."""
    from monitor.models import Forecast

    found = []
    for fc in Forecast.objects.filter(host=host):
        for name, at in sorted(fc.crossings.items()):
            if at is not None:
                found.append(f"{fc.metric} reaches {name} at "
                             f"{datetime.fromtimestamp(at, tz=UTC):%H:%M:%S} UTC")  # fmt: skip
    return found


def _lapse(host_ids: list[int], triggers: list[Trigger], now: datetime) -> None:
    """Pending proposals of these hosts whose trigger no longer holds lapse."""
    rails = guardrails()
    holding = {(t.host.pk, t.name) for t in triggers}
    names = {pk: h.name for pk, h in Host.objects.in_bulk(host_ids).items()}
    for p in Proposal.objects.filter(host_id__in=host_ids, status=Proposal.Status.PENDING):
        if (p.host_id, p.trigger) in holding:
            continue
        if p.trigger.startswith("guardrail:") and p.trigger[10:] in rails.holding(names[p.host_id]):
            continue
        with transaction.atomic():
            n = Proposal.objects.filter(pk=p.pk, status=Proposal.Status.PENDING).update(
                status=Proposal.Status.LAPSED,
                decided_at=now,
                decision_reason="its trigger no longer holds",
            )
            if n:
                audit.record(
                    None,
                    "proposal.lapse",
                    f"proposal {p.pk} on {names[p.host_id]}",
                    f"{p.trigger} no longer holds",
                )
