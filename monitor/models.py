from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.postgres.indexes import BrinIndex
from django.db import models

from agent.lifecycle import LifecycleState
from monitor import summary

LIFECYCLE_CHOICES = [(state.value, state.value.replace("_", " ")) for state in LifecycleState]


class Host(models.Model):
    """A GPU host running the Sentinel agent beside vLLM."""

    class Status(models.TextChoices):
        UNKNOWN = "unknown"
        UP = "up"
        DEGRADED = "degraded"
        UNREACHABLE = "unreachable"

    name = models.CharField(max_length=200, unique=True)
    agent_url = models.URLField(max_length=500, help_text="e.g. http://gpu-01:9300")
    agent_token = models.CharField(max_length=200, help_text="Bearer token the agent expects")
    model_name = models.CharField(max_length=300, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Kept current by every poll; the fleet view reads only these, never the checkpoints.
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UNKNOWN)
    status_reason = models.CharField(max_length=500, blank=True)
    lifecycle_state = models.CharField(
        max_length=40, choices=LIFECYCLE_CHOICES, default=LifecycleState.UNKNOWN.value
    )
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    latest = models.JSONField(default=dict, blank=True)
    # Which of the agent's events we have stored: its run (start time) and the highest id.
    agent_started_at = models.FloatField(null=True, blank=True)
    events_seen = models.BigIntegerField(default=0)
    # The most probable open prediction, kept by monitor/analysis.py: the fleet sorts by it.
    risk = models.FloatField(default=0.0)
    top_prediction = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def figures(self) -> dict[str, str]:
        return summary.row_figures(self.latest or {})

    @property
    def risk_text(self) -> str:
        return summary.risk_text(self.top_prediction or {})

    def is_stale(self, now: datetime, max_age_s: float) -> bool:
        return self.last_seen_at is None or now - self.last_seen_at > timedelta(seconds=max_age_s)


class Checkpoint(models.Model):
    """One stored checkpoint: the agent's JSON (agent/checkpoint.py) plus what we index on.

    The big table. Per-host time ranges use the (host, collected_at) index; retention
    deletes by received_at, which grows with insertion order, so a BRIN index covers it
    for a fraction of a btree's size.
    """

    id = models.BigAutoField(primary_key=True)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, db_index=False)
    collected_at = models.DateTimeField()
    received_at = models.DateTimeField()
    lifecycle_state = models.CharField(max_length=40)
    data = models.JSONField()

    class Meta:
        indexes = [
            models.Index(fields=["host", "collected_at"], name="checkpoint_host_time"),
            BrinIndex(fields=["received_at"], name="checkpoint_received_brin"),
        ]


class CheckpointRollup(models.Model):
    """One host-minute of checkpoints, folded into figures by monitor/retention.py.

    Raw checkpoints are kept for days, these for months: a chart of an old range draws from
    them. `figures` maps a chart series (monitor/summary.py's names) to [avg, min, max] over
    the minute, leaving out series not measured in it. A jsonb of the charts' own names rather
    than ~50 float columns: a new series needs no migration and old rows just lack it. It
    costs ~1.3 KB a host-minute with its indexes, 1.8 MB a host-day against 51 MB raw
    (bench/storage); float4 columns would be about 3 times smaller again.
    """

    id = models.BigAutoField(primary_key=True)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, db_index=False)
    minute = models.DateTimeField()
    samples = models.PositiveIntegerField()  # checkpoints folded in
    lifecycle_state = models.CharField(max_length=40)  # of the minute's last checkpoint
    figures = models.JSONField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "minute"], name="rollup_host_minute")
        ]
        # Rollups are written in minute order, so retention finds the old ones by a BRIN.
        indexes = [BrinIndex(fields=["minute"], name="rollup_minute_brin")]


class LifecycleTransition(models.Model):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="transitions")
    at = models.DateTimeField()
    from_state = models.CharField(max_length=40)
    to_state = models.CharField(max_length=40)
    trigger = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["host", "-at"], name="transition_host_time")]
        ordering = ["-at"]


class IngestError(models.Model):
    """A poll that brought no usable checkpoint: what went wrong, and what the agent sent."""

    class Kind(models.TextChoices):
        TIMEOUT = "timeout"
        CONNECTION = "connection"
        HTTP_STATUS = "http_status"
        INVALID_PAYLOAD = "invalid_payload"
        TOO_LARGE = "too_large"
        WRONG_HOST = "wrong_host"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="ingest_errors")
    at = models.DateTimeField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    message = models.TextField()
    payload_excerpt = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["host", "-at"], name="ingest_error_host_time")]
        ordering = ["-at"]


class VllmError(models.Model):
    """A classified vLLM error, one row per episode: repeats within EPISODE_GAP add to `count`."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="vllm_errors")
    category = models.CharField(max_length=40)
    message = models.TextField()
    signature = models.CharField(max_length=500)
    count = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    traceback = models.TextField(blank=True)
    fields = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["host", "-last_seen_at"], name="vllm_error_host_time"),
            models.Index(
                fields=["host", "signature", "-last_seen_at"], name="vllm_error_signature"
            ),
        ]
        ordering = ["-last_seen_at"]


class GpuEvent(models.Model):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="gpu_events")
    at = models.DateTimeField()
    gpu_index = models.IntegerField(null=True, blank=True)
    kind = models.CharField(max_length=40)
    severity = models.CharField(max_length=20)
    xid = models.IntegerField(null=True, blank=True)
    message = models.TextField()
    action = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["host", "-at"], name="gpu_event_host_time")]
        ordering = ["-at"]


class ValidationReport(models.Model):
    """A pre-startup validation report as the agent made it: checks with values and fixes."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="validation_reports")
    at = models.DateTimeField()
    trigger = models.CharField(max_length=40)
    blocked = models.BooleanField(default=False)
    status = models.CharField(max_length=10)  # pass, warn, fail: the worst of the checks
    checks = models.JSONField(default=list)

    class Meta:
        indexes = [models.Index(fields=["host", "-at"], name="validation_host_time")]
        ordering = ["-at"]


class Prediction(models.Model):
    """One predicted failure of one host, from first sighting until it no longer holds.

    Opened and closed with hysteresis (learning/hysteresis.py) so it does not flap; the
    figures are those of the latest analysis while it is open.
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="predictions")
    failure_type = models.CharField(max_length=40)
    probability = models.FloatField()
    confidence = models.FloatField()
    time_to_failure_s = models.FloatField(null=True, blank=True)
    expected_failure_at = models.DateTimeField(null=True, blank=True)
    evidence = models.JSONField(default=list)
    recommended_mitigations = models.JSONField(default=list)
    first_predicted_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True)  # "happened", "lapsed" once closed

    class Meta:
        indexes = [
            models.Index(fields=["host", "-updated_at"], name="prediction_host_time"),
            models.Index(
                fields=["host"], condition=models.Q(closed_at__isnull=True), name="prediction_open"
            ),
        ]
        ordering = ["-probability"]

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class Forecast(models.Model):
    """The latest forecast of one metric of one host: its path, band and threshold crossings."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="forecasts")
    metric = models.CharField(max_length=60)
    made_at = models.DateTimeField()
    times = models.JSONField(default=list)  # epoch seconds
    values = models.JSONField(default=list)
    lower = models.JSONField(default=list)
    upper = models.JSONField(default=list)
    crossings = models.JSONField(default=dict)  # threshold name -> epoch seconds or null

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "metric"], name="forecast_one_per_metric")
        ]


class LearnedModel(models.Model):
    """A trained model, kept with its format, library version and evaluation figures."""

    kind = models.CharField(max_length=40)  # e.g. "patterns"
    version = models.PositiveIntegerField()
    model_format = models.PositiveIntegerField()
    library_version = models.CharField(max_length=40)  # scikit-learn's, at training time
    created_at = models.DateTimeField()
    card = models.JSONField(default=dict)  # what it was trained on, figures, caveats
    blob = models.BinaryField()
    active = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "version"], name="learned_model_version")
        ]
        ordering = ["-created_at"]
