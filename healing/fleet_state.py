"""What the safety gate needs from the database: settings, recent executions, pauses."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings as django_settings
from django.db.models import Count, Q

from healing.models import Pause, Proposal, StrategySetting
from mitigations.gate import Execution, FleetState, Settings
from mitigations.gate import Pause as PlainPause
from monitor.models import Host

LOOKBACK = timedelta(hours=2)  # rate limits, breakers and cooldowns look this far back
RAN = ("executing", "verifying", "done", "failed")
TAKING = ("approved", *RAN)  # an approved proposal is about to take its capacity


def gate_settings() -> Settings:
    rows = list(StrategySetting.objects.all())
    base = Settings()
    return Settings(
        auto_threshold=getattr(django_settings, "AUTO_THRESHOLD", base.auto_threshold),
        risk_thresholds=getattr(django_settings, "AUTO_RISK_THRESHOLDS", base.risk_thresholds),
        strategy_thresholds={r.strategy: r.threshold for r in rows if r.threshold is not None},
        auto_enabled=frozenset(r.strategy for r in rows if r.auto_enabled),
        shadow=frozenset(r.strategy for r in rows if r.shadow),
        cooldown_s=getattr(django_settings, "MITIGATION_COOLDOWN_S", base.cooldown_s),
        capacity_budget=getattr(django_settings, "CAPACITY_BUDGET", base.capacity_budget),
        max_hosts_per_model=getattr(django_settings, "MAX_HOSTS_PER_MODEL", 1),
        rate_limit=getattr(django_settings, "MITIGATION_RATE_LIMIT", base.rate_limit),
        host_breaker_mitigations=getattr(
            django_settings, "HOST_BREAKER_MITIGATIONS", base.host_breaker_mitigations
        ),
    )


def fleet_state(now: datetime) -> FleetState:
    per_model = dict(
        Host.objects.filter(enabled=True).values_list("model_name").annotate(n=Count("pk"))
    )
    executions = [
        Execution(
            host=p.host.name,
            model=p.evidence.get("model") or p.host.model_name or None,
            strategy=p.chosen_strategy or p.strategy,
            started_at=(p.started_at or p.decided_at or now).timestamp(),
            ends_at=capacity_back_at(p, now),
            capacity_cost=float(p.plan.get("capacity_cost") or 0.0),
            outcome=p.outcome or ("failure" if p.status == "failed" else None),
        )
        for p in Proposal.objects.select_related("host").filter(
            Q(started_at__gte=now - LOOKBACK) | Q(status="approved"), status__in=TAKING
        )
    ]
    pauses = [
        PlainPause(p.scope, p.reason, p.owner.username, p.until.timestamp())
        for p in Pause.objects.select_related("owner").filter(until__gt=now)
    ]
    return FleetState(sum(per_model.values()), per_model, executions, pauses)


def capacity_back_at(p: Proposal, now: datetime) -> float:
    """Capacity is out for the plan's duration (a drain and a restart, about), and at least
    until its steps are done."""
    start = p.started_at or p.decided_at or now
    planned = start.timestamp() + float(p.plan.get("duration_s") or 0.0)
    if p.status in ("approved", "executing"):
        return max(planned, now.timestamp() + 1.0)
    return planned
