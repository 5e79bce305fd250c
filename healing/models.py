"""Self-healing records: guardrail policies, incidents, proposals and what became of them,
the learner's labels and state, pauses, and the audit log."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models

from monitor.models import Host


class GuardrailPolicy(models.Model):
    """A guardrail as data (mitigations/guardrails.py); admins edit it in the UI."""

    name = models.SlugField(max_length=80, unique=True)
    condition = models.TextField()
    failure_type = models.CharField(max_length=40)
    severity = models.CharField(max_length=20, default="warning")
    hold_s = models.FloatField(default=30.0)
    clear_s = models.FloatField(default=60.0)
    interventions = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Incident(models.Model):
    """One failure episode of one host: opened by the first prediction, guardrail or failure."""

    class State(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="incidents")
    failure_type = models.CharField(max_length=40)
    severity = models.CharField(max_length=20, default="warning")
    state = models.CharField(max_length=20, choices=State.choices, default=State.OPEN)
    title = models.CharField(max_length=300)
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    signals = models.JSONField(default=list)  # [{"kind", "name", "at", "detail"}], oldest first

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["host", "failure_type"],
                condition=~models.Q(state="resolved"),
                name="incident_one_open_per_failure",
            )
        ]
        ordering = ["-opened_at"]


class Proposal(models.Model):
    """A mitigation proposed for an incident, and everything that happened to it."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waits for an operator
        APPROVED = "approved"  # by an operator, or automatically: to be executed
        VETOED = "vetoed"
        EXECUTING = "executing"
        VERIFYING = "verifying"
        DONE = "done"  # executed and verified: see outcome
        FAILED = "failed"  # an agent action failed
        EXPIRED = "expired"
        ESCALATED = "escalated"  # its deadline passed and it was too disruptive to run
        LAPSED = "lapsed"  # the trigger stopped holding before anyone decided

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="proposals")
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="proposals")
    trigger = models.CharField(max_length=120)  # "guardrail:kv_cache_near_full", "prediction:42"
    strategy = models.CharField(max_length=60)
    params = models.JSONField(default=dict)
    plan = models.JSONField(default=dict)  # steps, capacity_cost, duration_s, verification
    risk = models.CharField(max_length=10)
    confidence = models.FloatField()
    alternatives = models.JSONField(default=list)  # [{"strategy", "confidence", "plan", ...}]
    evidence = models.JSONField(default=dict)  # metrics, forecast, errors, predictions
    context_key = models.CharField(max_length=120)
    gate = models.JSONField(default=list)  # the safety checks, [{"name", "ok", "detail"}]
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    auto = models.BooleanField(default=False)  # decided by the gate, not an operator
    would_auto = models.BooleanField(default=False)  # shadow mode: the gate would have run it
    on_expiry = models.CharField(max_length=20, default="escalated")
    created_at = models.DateTimeField()
    deadline_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    decision_reason = models.CharField(max_length=500, blank=True)
    chosen_strategy = models.CharField(max_length=60, blank=True)  # what was approved
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Execution and verification
    steps_done = models.JSONField(default=list)  # agent jobs, one per finished step
    started_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    verify_until = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True)
    metrics_before = models.JSONField(default=dict)
    metrics_after = models.JSONField(default=dict)
    error = models.CharField(max_length=1000, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "deadline_at"], name="proposal_status")]
        ordering = ["-created_at"]

    def chosen(self) -> dict[str, Any]:
        """The option decided on (an approved alternative, else the proposal's own), as
        {"strategy", "plan", "confidence"}."""
        strategy = self.chosen_strategy or self.strategy
        for alt in self.alternatives:
            if strategy != self.strategy and alt.get("strategy") == strategy:
                return {"strategy": strategy, "plan": alt["plan"],
                        "confidence": float(alt.get("confidence") or 0.0)}  # fmt: skip
        return {"strategy": self.strategy, "plan": self.plan, "confidence": self.confidence}


class Label(models.Model):
    """A training label for the learner: an approval, a veto or a verified outcome."""

    kind = models.CharField(max_length=20)  # learning.labels.LABEL_KINDS
    context_key = models.CharField(max_length=120)
    strategy = models.CharField(max_length=60)
    at = models.DateTimeField()
    outcome = models.CharField(max_length=20, blank=True)
    execution_s = models.FloatField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    next_context_key = models.CharField(max_length=120, blank=True)
    auto_agreed = models.BooleanField(null=True, blank=True)
    metrics = models.JSONField(default=dict)
    proposal = models.ForeignKey(Proposal, null=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["at"]


class LearnerState(models.Model):
    """The learner's whole state (learning/continuous.py), one row, saved after each label."""

    state = models.JSONField(default=dict)
    labels_applied = models.BigIntegerField(default=0)  # the highest Label id it has learnt
    updated_at = models.DateTimeField(auto_now=True)


class StrategySetting(models.Model):
    """Per strategy: may it run by itself, is it in shadow mode, its own threshold."""

    strategy = models.CharField(max_length=60, unique=True)
    auto_enabled = models.BooleanField(default=False)
    shadow = models.BooleanField(default=False)
    threshold = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["strategy"]


class Pause(models.Model):
    """Automation paused for a host or the whole fleet, like a silence: reason, owner, expiry."""

    scope = models.CharField(max_length=200)  # "fleet" or a host name
    reason = models.CharField(max_length=500)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField()
    until = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]


class AuditEntry(models.Model):
    """Who did what, when and why. Written once; the application offers no way to change it."""

    at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150)  # a username, or "sentinel" for automatic acts
    action = models.CharField(max_length=60)  # "proposal.approve", "policy.update", ...
    target = models.CharField(max_length=200)
    reason = models.CharField(max_length=1000, blank=True)
    detail = models.JSONField(default=dict)  # before / after, parameters

    class Meta:
        ordering = ["-at"]
