"""Self-healing records: guardrail policies, incidents, proposals and what became of them,
the learner's labels and state, pauses, and the audit log."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
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


SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}  # an incident's severities, mildest first


class Incident(models.Model):
    """One failure episode of one host, or (host empty, `members` set) the same failure on
    several hosts of one model within minutes: a fleet incident.

    Opened by the first prediction, guardrail or failure; later signals join it. Open →
    acknowledged → resolved (by itself once the host is healthy for INCIDENT_QUIET_S, after a
    verified mitigation, or by an operator with a note); reopened if the failure returns within
    INCIDENT_REOPEN_S. The figures are filled in when it resolves (healing/incident_figures.py).
    """

    class State(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    class Healed(models.TextChoices):
        AUTOMATIC = "automatic"  # a mitigation Sentinel ran by itself worked
        APPROVAL = "approval"  # a mitigation an operator approved worked
        HAND = "hand"  # an operator resolved it without a mitigation of ours that worked
        ITSELF = "itself"  # it went quiet with no mitigation that worked

    host = models.ForeignKey(
        Host, null=True, blank=True, on_delete=models.CASCADE, related_name="incidents"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="members"
    )
    model_name = models.CharField(max_length=300, blank=True)  # the host's, when it opened
    failure_type = models.CharField(max_length=40)
    severity = models.CharField(max_length=20, default="warning")
    state = models.CharField(max_length=20, choices=State.choices, default=State.OPEN)
    title = models.CharField(max_length=300)
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    last_signal_at = models.DateTimeField(null=True, blank=True)
    signals = models.JSONField(default=list)  # [{"kind", "name", "at", "detail"}], oldest first
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolution = models.CharField(max_length=1000, blank=True)
    reopened = models.PositiveIntegerField(default=0)
    # Figures, filled in on resolution.
    first_predicted_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    mitigated_at = models.DateTimeField(null=True, blank=True)
    lead_time_s = models.FloatField(null=True, blank=True)  # first prediction → failure
    detect_s = models.FloatField(null=True, blank=True)  # failure → incident (0 if predicted)
    mitigate_s = models.FloatField(null=True, blank=True)  # opened → first mitigation ran
    recover_s = models.FloatField(null=True, blank=True)  # opened → resolved
    healed_by = models.CharField(max_length=20, choices=Healed.choices, blank=True)
    search = SearchVectorField(null=True, blank=True)  # errors, notes, signals, title

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["host", "failure_type"],
                condition=~models.Q(state="resolved"),
                name="incident_one_open_per_failure",
            )
        ]
        indexes = [
            models.Index(fields=["-opened_at"], name="incident_opened"),
            models.Index(fields=["host", "-opened_at"], name="incident_host_opened"),
            # The list's order, with the id so that its filters (all `id IN (...)`) can be
            # answered from the index alone.
            models.Index(
                fields=["-opened_at", "-id"],
                condition=models.Q(parent__isnull=True),
                name="incident_top_opened",
            ),
            GinIndex(fields=["search"], name="incident_search"),
            models.Index(
                fields=["parent", "id"],
                condition=models.Q(parent__isnull=False),
                name="incident_members",
            ),
        ]
        ordering = ["-opened_at"]

    def __str__(self) -> str:
        return self.title

    @property
    def is_fleet(self) -> bool:
        return self.host_id is None


class IncidentNote(models.Model):
    """What an operator wrote on an incident: a comment, an acknowledgement, a resolution."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    at = models.DateTimeField()
    kind = models.CharField(max_length=20, default="note")  # note, acknowledge, resolve
    text = models.CharField(max_length=2000)

    class Meta:
        ordering = ["at"]


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
        indexes = [
            models.Index(fields=["status", "deadline_at"], name="proposal_status"),
            # The history's filters: what ran, how it ended (index-only to the incident).
            models.Index(
                fields=["strategy", "chosen_strategy", "status", "incident"],
                name="proposal_strategy",
            ),
            models.Index(fields=["chosen_strategy", "status", "incident"], name="proposal_chosen"),
            models.Index(fields=["outcome", "incident"], name="proposal_outcome"),
            models.Index(fields=["decided_by", "incident"], name="proposal_decided_by"),
        ]
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
