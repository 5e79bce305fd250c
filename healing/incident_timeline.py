"""One incident's story in time order, from every table that has a part of it, and the host's
context when it opened. Used by the incident page and its JSON and CSV exports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from healing.history import RAN
from healing.models import Incident, Proposal
from monitor.models import GpuEvent, LifecycleTransition, VllmError
from monitor.models import Prediction as PredictionRow

# The window drawn and listed around an incident: retention keeps its raw checkpoints.
BEFORE = timedelta(seconds=getattr(settings, "INCIDENT_WINDOW_BEFORE_S", 900))
AFTER = timedelta(seconds=getattr(settings, "INCIDENT_WINDOW_AFTER_S", 300))
MAX_ENTRIES_PER_KIND = 200  # a flapping host can log thousands; the page shows the first


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    kind: str  # signal, lifecycle, prediction, proposal, decision, step, outcome, note, ...
    title: str
    detail: str = ""
    who: str = ""
    host: str = ""

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


def window(incident: Incident) -> tuple[datetime, datetime]:
    end = incident.resolved_at or timezone.now()
    return incident.opened_at - BEFORE, end + AFTER


def timeline(incident: Incident) -> list[Entry]:
    """Everything that happened to the incident (and, for a fleet incident, to its hosts'
    incidents), oldest first."""
    members = list(incident.members.select_related("host")) if incident.is_fleet else []
    entries = _marks(incident)
    for member in members:
        entries += [
            Entry(
                member.opened_at,
                "opened",
                f"{member.host.name} joined",
                member.title,
                host=member.host.name,
            ),
            *_marks(member, only_resolved=True),
        ]
    entries += _notes(incident)
    host_incidents = [incident] if not incident.is_fleet else members
    for one in host_incidents:
        entries += _host_history(one)
    entries += _proposals([one.pk for one in host_incidents])
    return sorted(entries, key=lambda e: (e.at, e.kind))


def _marks(incident: Incident, only_resolved: bool = False) -> list[Entry]:
    host = incident.host.name if incident.host_id else ""
    marks = []
    if not only_resolved:
        marks.append(Entry(incident.opened_at, "opened", f"Opened: {incident.title}", host=host))
        if incident.failed_at:
            marks.append(
                Entry(
                    incident.failed_at,
                    "failed",
                    f"{incident.failure_type} began",
                    _lead(incident),
                    host=host,
                )
            )
        if incident.acknowledged_at:
            marks.append(
                Entry(
                    incident.acknowledged_at,
                    "acknowledged",
                    "Acknowledged",
                    who=_name(incident.acknowledged_by),
                    host=host,
                )
            )
    if incident.resolved_at:
        how = incident.healed_by and f"healed: {incident.get_healed_by_display()}"
        marks.append(
            Entry(
                incident.resolved_at,
                "resolved",
                "Resolved",
                incident.resolution or how or "",
                _name(incident.resolved_by),
                host,
            )
        )
    for s in incident.signals:
        at = datetime.fromtimestamp(float(s.get("at") or 0), tz=incident.opened_at.tzinfo)
        marks.append(Entry(at, "signal", s.get("name", ""), str(s.get("detail", "")), host=host))
    return marks


def _lead(incident: Incident) -> str:
    if incident.lead_time_s is None:
        return "not predicted before it began"
    return f"first predicted {incident.lead_time_s:.0f} s before"


def _notes(incident: Incident) -> list[Entry]:
    return [
        Entry(n.at, n.kind if n.kind != "acknowledge" else "note", n.text, who=n.author.username)
        for n in incident.notes.select_related("author")
    ]


def _host_history(incident: Incident) -> list[Entry]:
    """Lifecycle transitions, predictions, vLLM errors and GPU events of the incident's host
    in its window."""
    start, end = window(incident)
    host_id, host = incident.host_id, incident.host.name
    entries = [
        Entry(t.at, "lifecycle", f"{t.from_state} → {t.to_state}", t.trigger, host=host)
        for t in LifecycleTransition.objects.filter(
            host_id=host_id, at__gte=start, at__lte=end
        ).order_by("at")[:MAX_ENTRIES_PER_KIND]
    ]
    for p in PredictionRow.objects.filter(
        host_id=host_id, first_predicted_at__gte=start, first_predicted_at__lte=end
    ).order_by("first_predicted_at")[:MAX_ENTRIES_PER_KIND]:
        lead = ""
        if incident.failed_at and p.failure_type == incident.failure_type:
            lead = f", {(incident.failed_at - p.first_predicted_at).total_seconds():.0f} s lead"
        ttf = f"{p.time_to_failure_s:.0f} s" if p.time_to_failure_s is not None else "-"
        entries.append(
            Entry(
                p.first_predicted_at,
                "prediction",
                f"{p.failure_type} predicted (p={p.probability:.2f})",
                f"time to failure {ttf}{lead}",
                host=host,
            )
        )
    for e in VllmError.objects.filter(
        host_id=host_id, last_seen_at__gte=start, first_seen_at__lte=end
    ).order_by("first_seen_at")[:MAX_ENTRIES_PER_KIND]:
        times = f" x{e.count}" if e.count > 1 else ""
        entries.append(
            Entry(e.first_seen_at, "error", f"{e.category}{times}", e.message[:500], host=host)
        )
    for g in GpuEvent.objects.filter(host_id=host_id, at__gte=start, at__lte=end).order_by("at")[
        :MAX_ENTRIES_PER_KIND
    ]:
        entries.append(Entry(g.at, "gpu", f"GPU {g.kind} ({g.severity})", g.message, host=host))
    return entries


def _proposals(incident_ids: list[int]) -> list[Entry]:
    entries = []
    for p in Proposal.objects.filter(incident_id__in=incident_ids).select_related(
        "decided_by", "host"
    ):
        host = p.host.name
        entries.append(
            Entry(
                p.created_at,
                "proposal",
                f"Proposed {p.strategy} ({p.risk} risk, confidence {p.confidence:.2f})",
                _gate_text(p),
                host=host,
            )
        )
        if p.decided_at:
            who = "sentinel (automatic)" if p.auto else _name(p.decided_by) or "sentinel"
            chosen = p.chosen()["strategy"]
            what = {"approved": f"approved {chosen}", "vetoed": "vetoed"}.get(
                "approved" if p.status in {"approved", *RAN} else p.status, p.status
            )
            entries.append(
                Entry(p.decided_at, "decision", what.capitalize(), p.decision_reason, who, host)
            )
        for step in p.steps_done:
            at = _epoch(step.get("finished_at")) or p.executed_at or p.decided_at or p.created_at
            entries.append(
                Entry(
                    at,
                    "step",
                    f"{step.get('action')} on {step.get('host')}",
                    str(step.get("result") or ""),
                    host=host,
                )
            )
        if p.error:
            entries.append(
                Entry(
                    p.executed_at or p.started_at or p.created_at,
                    "step",
                    "Execution failed",
                    p.error,
                    host=host,
                )
            )
        if p.outcome:
            at = p.verify_until or p.executed_at or p.created_at
            entries.append(
                Entry(
                    at,
                    "outcome",
                    f"Verified: {p.outcome.replace('_', ' ')}",
                    _before_after(p),
                    host=host,
                )
            )
    return entries


def _gate_text(p: Proposal) -> str:
    blocked = [c.get("detail") or c.get("name") for c in p.gate if not c.get("ok")]
    if p.auto:
        return "every safety check passed: ran by itself"
    return "waits for an operator: " + "; ".join(str(b) for b in blocked) if blocked else ""


def _before_after(p: Proposal) -> str:
    keys = sorted(set(p.metrics_before) & set(p.metrics_after))[:8]
    return ", ".join(
        f"{k} {p.metrics_before[k]:.3g} → {p.metrics_after[k]:.3g}"
        for k in keys
        if isinstance(p.metrics_before[k], int | float)
        and isinstance(p.metrics_after[k], int | float)
    )


def _epoch(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError):
        return None


def _name(user: Any) -> str:
    return user.username if user is not None else ""


# ---------------------------------------------------------------- host context


def host_context(incident: Incident) -> dict[str, Any]:
    """What the host was when the incident opened: the checkpoint nearest that moment."""
    if incident.host_id is None:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data::text FROM monitor_checkpoint WHERE host_id = %s AND collected_at <= %s "
            "ORDER BY collected_at DESC LIMIT 1",
            [incident.host_id, incident.opened_at],
        )
        row = cursor.fetchone()
    if row is None:
        return {}
    from agent.checkpoint import decode
    from monitor.summary import summarize

    cp = decode(row[0])
    figures = summarize(cp)
    context = {
        "collected_at": datetime.fromtimestamp(cp.collected_at, tz=UTC),
        "lifecycle_state": figures["lifecycle_state"],
        "gpus": [g.name or f"GPU {g.index}" for g in cp.gpus],
        "gpu_mem": f"{figures.get('gpu_mem_used_gb') or 0:.1f} / "
        f"{figures.get('gpu_mem_total_gb') or 0:.0f} GB",
        "kv_cache_usage_pct": figures.get("kv_cache_usage_pct"),
        "requests": (figures.get("requests_running"), figures.get("requests_waiting")),
        "startup": figures.get("startup") or {},
    }
    context["engine_args"] = dict(cp.engine_args)
    context["model"] = (cp.vllm.model_name if cp.vllm else None) or incident.model_name
    return context
