"""An incident's life: opened or joined by signals, grouped across a model's hosts, reopened
when its failure returns, acknowledged, resolved, noted; figures and search text on the way.

`open_or_join` runs inside the trigger transaction (healing/triggers.py), which holds the
fleet-wide gate lock, so two workers never open or group the same episode twice.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from healing import audit
from healing.incident_figures import LOOK_BEFORE_S, Mitigation, figures, fleet_healed_by
from healing.incident_timeline import window
from healing.models import SEVERITY_RANK, Incident, IncidentNote
from learning.history import failures_in
from monitor.models import Host, VllmError
from monitor.models import Prediction as PredictionRow

UNRESOLVED = (Incident.State.OPEN, Incident.State.ACKNOWLEDGED)
# The figures look at most this long after opening for the failure (a long incident's later
# checkpoints do not change when it first failed).
FIGURES_SPAN_S = 2 * 3600.0


class IncidentError(Exception):
    """An operator's request that cannot be done as asked; the message says why."""


# ---------------------------------------------------------------- signals


def open_or_join(
    host: Host, failure_type: str, severity: str, signal: dict[str, Any], now: datetime
) -> Incident:
    """Return the host's unresolved incident of this failure with `signal` joined; reopen one
    resolved moments ago, or open a new one (grouped with the same failure on the model's
    other hosts)."""
    incident = (
        Incident.objects.select_for_update()
        .filter(host=host, failure_type=failure_type, state__in=UNRESOLVED)
        .first()
    )
    if incident is None:
        incident = _reopen(host, failure_type, now) or _new(host, failure_type, severity, now)
    if signal["name"] not in {s.get("name") for s in incident.signals}:
        incident.signals = [*incident.signals, signal]
    if SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(incident.severity, 0):
        incident.severity = severity
        if incident.parent_id:
            _raise_severity(incident.parent_id, severity)
    incident.updated_at = incident.last_signal_at = now
    incident.save(update_fields=["signals", "severity", "updated_at", "last_signal_at"])
    return incident


def _new(host: Host, failure_type: str, severity: str, now: datetime) -> Incident:
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                host=host,
                model_name=host.model_name,
                failure_type=failure_type,
                severity=severity,
                opened_at=now,
                updated_at=now,
                last_signal_at=now,
                title=f"{failure_type.replace('_', ' ')} on {host.name}",
            )
    except IntegrityError:  # another worker opened it a moment ago
        return Incident.objects.select_for_update().get(
            host=host, failure_type=failure_type, state__in=UNRESOLVED
        )
    _group(incident, now)
    reindex(incident.pk)
    return incident


def _reopen(host: Host, failure_type: str, now: datetime) -> Incident | None:
    """The same failure back within INCIDENT_REOPEN_S of resolving is the same episode."""
    since = now - timedelta(seconds=settings.INCIDENT_REOPEN_S)
    incident = (
        Incident.objects.select_for_update()
        .filter(
            host=host,
            failure_type=failure_type,
            state=Incident.State.RESOLVED,
            resolved_at__gte=since,
        )
        .order_by("-resolved_at")
        .first()
    )
    if incident is None:
        return None
    incident.state, incident.resolved_at, incident.resolved_by = Incident.State.OPEN, None, None
    incident.reopened += 1
    incident.healed_by = ""
    incident.save(update_fields=["state", "resolved_at", "resolved_by", "reopened", "healed_by"])
    if incident.parent_id:
        Incident.objects.filter(pk=incident.parent_id, state=Incident.State.RESOLVED).update(
            state=Incident.State.OPEN, resolved_at=None, resolved_by=None, updated_at=now
        )
    audit.record(None, "incident.reopen", incident.title, "the failure came back")
    return incident


def _group(incident: Incident, now: datetime) -> None:
    """Put the incident under the fleet incident of the same failure on other hosts of its
    model opened within INCIDENT_GROUP_S; make one when the second host appears."""
    if not incident.model_name:
        return
    since = now - timedelta(seconds=settings.INCIDENT_GROUP_S)
    siblings = list(
        Incident.objects.select_for_update()
        .filter(
            failure_type=incident.failure_type,
            model_name=incident.model_name,
            host__isnull=False,
            state__in=UNRESOLVED,
            opened_at__gte=since,
        )
        .exclude(pk=incident.pk)
        .order_by("opened_at")
    )
    if not siblings:
        return
    fleet = next((s.parent for s in siblings if s.parent_id), None)
    if fleet is None:
        fleet = Incident.objects.create(
            model_name=incident.model_name,
            failure_type=incident.failure_type,
            severity=max(
                (s.severity for s in [incident, *siblings]), key=lambda s: SEVERITY_RANK.get(s, 0)
            ),
            opened_at=siblings[0].opened_at,
            updated_at=now,
            last_signal_at=now,
            title="",
        )
        audit.record(
            None,
            "incident.group",
            f"incident {fleet.pk}",
            f"{incident.failure_type} on several hosts of {incident.model_name}",
        )
    Incident.objects.filter(pk__in=[incident.pk, *(s.pk for s in siblings)]).update(parent=fleet)
    incident.parent = fleet
    _retitle(fleet)
    _raise_severity(fleet.pk, incident.severity)


def _retitle(fleet: Incident) -> None:
    n = Incident.objects.filter(parent=fleet).count()
    title = f"{fleet.failure_type.replace('_', ' ')} on {n} hosts of {fleet.model_name}"
    fleet.title = title[:300]
    fleet.save(update_fields=["title"])
    reindex(fleet.pk)


def _raise_severity(incident_id: int, severity: str) -> None:
    weaker = [s for s, r in SEVERITY_RANK.items() if r < SEVERITY_RANK.get(severity, 0)]
    Incident.objects.filter(pk=incident_id, severity__in=weaker).update(severity=severity)


# ---------------------------------------------------------------- operators


def acknowledge(incident_id: int, user: Any, comment: str, now: datetime) -> Incident:
    """Open → acknowledged ("on it"), with the members of a fleet incident."""
    with transaction.atomic():
        incident = Incident.objects.select_for_update().get(pk=incident_id)
        if incident.state == Incident.State.RESOLVED:
            raise IncidentError(f"{incident.title} is resolved; nothing to acknowledge.")
        if incident.state == Incident.State.ACKNOWLEDGED:
            who = incident.acknowledged_by.username if incident.acknowledged_by else "someone"
            raise IncidentError(f"{who} acknowledged it already.")
        targets = Q(pk=incident.pk) | Q(parent=incident, state=Incident.State.OPEN)
        Incident.objects.filter(targets).update(
            state=Incident.State.ACKNOWLEDGED,
            acknowledged_at=now,
            acknowledged_by=user,
            updated_at=now,
        )
        _note(incident, user, "acknowledge", comment or "acknowledged", now)
        reindex(incident.pk)
        audit.record(user, "incident.acknowledge", incident.title, comment)
    return Incident.objects.get(pk=incident_id)


def resolve(
    incident_id: int, user: Any | None, note: str, now: datetime, *, why: str = ""
) -> Incident | None:
    """Resolve it (and a fleet incident's members); `user` None: Sentinel saw it heal.

    An operator must say how it was fixed. Returns None when it was resolved already."""
    if user is not None and not note.strip():
        raise IncidentError("Say in a note how it was resolved.")
    with transaction.atomic():
        incident = Incident.objects.select_for_update().get(pk=incident_id)
        if incident.state == Incident.State.RESOLVED:
            if user is not None:
                raise IncidentError(f"{incident.title} is resolved already.")
            return None
        if user is not None:  # before closing, which reindexes with it
            _note(incident, user, "resolve", note, now)
        for member in incident.members.exclude(state=Incident.State.RESOLVED):
            _close(member, user, note, now)
        _close(incident, user, note, now)
        audit.record(user, "incident.resolve", incident.title, note or why)
        if incident.parent_id:
            _close_fleet_if_done(incident.parent_id, now)
    return Incident.objects.get(pk=incident_id)


def add_note(incident_id: int, user: Any, text: str, now: datetime) -> IncidentNote:
    text = text.strip()
    if not text:
        raise IncidentError("The note is empty.")
    if len(text) > 2000:
        raise IncidentError(f"The note has {len(text)} characters; at most 2000 fit.")
    with transaction.atomic():
        incident = Incident.objects.get(pk=incident_id)
        note = _note(incident, user, "note", text, now)
        reindex(incident.pk)
        audit.record(user, "incident.note", incident.title, text[:200])
    return note


def _note(incident: Incident, user: Any, kind: str, text: str, now: datetime) -> IncidentNote:
    return IncidentNote.objects.create(
        incident=incident, author=user, at=now, kind=kind, text=text[:2000]
    )


def _close(incident: Incident, user: Any | None, note: str, now: datetime) -> None:
    incident.state, incident.resolved_at, incident.resolved_by = "resolved", now, user
    incident.resolution = note[:1000]
    incident.updated_at = now
    for name, value in _figures(incident, now, user is not None).items():
        setattr(incident, name, value)
    incident.save()
    reindex(incident.pk)


def _close_fleet_if_done(fleet_id: int, now: datetime) -> None:
    fleet = Incident.objects.select_for_update().get(pk=fleet_id)
    if fleet.state == "resolved" or fleet.members.exclude(state="resolved").exists():
        return
    _close(fleet, None, "", now)
    audit.record(None, "incident.resolve", fleet.title, "every host of it is resolved")


# ---------------------------------------------------------------- figures and search


def _figures(incident: Incident, now: datetime, by_person: bool) -> dict[str, Any]:
    """The model fields of incident_figures.figures, worked out from what is stored."""
    if incident.host_id is None:
        return _fleet_figures(incident, now)
    opened, resolved = incident.opened_at.timestamp(), now.timestamp()
    from monitor.analysis import recent_checkpoints

    checkpoints = recent_checkpoints(
        incident.host_id,
        opened - LOOK_BEFORE_S,
        min(resolved, opened + FIGURES_SPAN_S) + 0.001,
    )
    failures = [(f.failure_type, f.started_at) for f in failures_in(checkpoints)]
    prediction_ids = [
        int(s["name"].split(":", 1)[1])
        for s in incident.signals
        if s.get("kind") == "prediction" and s["name"].split(":", 1)[1].isdigit()
    ]
    predicted = [
        t.timestamp()
        for t in PredictionRow.objects.filter(pk__in=prediction_ids).values_list(
            "first_predicted_at", flat=True
        )
    ]
    mitigations = [
        Mitigation(p.started_at.timestamp() if p.started_at else None, p.outcome, p.auto)
        for p in incident.proposals.order_by("created_at")
    ]
    found = figures(
        failure_type=incident.failure_type,
        opened_at=opened,
        resolved_at=resolved,
        failures=failures,
        predicted_at=predicted,
        mitigations=mitigations,
        resolved_by_person=by_person,
    )
    return {k: _datetime(v) if k.endswith("_at") else v for k, v in asdict(found).items()}


def _fleet_figures(fleet: Incident, now: datetime) -> dict[str, Any]:
    members = list(fleet.members.all())

    def first(name: str) -> datetime | None:
        return min((getattr(m, name) for m in members if getattr(m, name)), default=None)

    def longest(name: str) -> float | None:
        return max(
            (getattr(m, name) for m in members if getattr(m, name) is not None), default=None
        )

    return {
        "first_predicted_at": first("first_predicted_at"),
        "failed_at": first("failed_at"),
        "mitigated_at": first("mitigated_at"),
        "lead_time_s": min(
            (m.lead_time_s for m in members if m.lead_time_s is not None), default=None
        ),
        "detect_s": longest("detect_s"),
        "mitigate_s": longest("mitigate_s"),
        "recover_s": max(0.0, (now - fleet.opened_at).total_seconds()),
        "healed_by": fleet_healed_by([m.healed_by for m in members]),
    }


def _datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), tz=UTC)


def reindex(incident_id: int) -> None:
    """Rebuild the incident's search text: title, signals, notes, resolution, proposal errors
    and reasons, and the vLLM errors its host logged while it was open."""
    incident = Incident.objects.filter(pk=incident_id).first()
    if incident is None:
        return
    parts = [incident.title, incident.failure_type, incident.resolution, incident.model_name]
    parts += [str(s.get("detail", "")) for s in incident.signals]
    parts += list(incident.notes.values_list("text", flat=True))
    for error, reason in incident.proposals.values_list("error", "decision_reason"):
        parts += [error, reason]
    if incident.host_id is not None:
        start, end = window(incident)
        errors = VllmError.objects.filter(
            host_id=incident.host_id, last_seen_at__gte=start, first_seen_at__lte=end
        ).values_list("message", flat=True)[:50]
        parts += list(errors)
    else:
        parts += [m.title for m in incident.members.all()]
    text = "\n".join(p for p in parts if p)[:100_000]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE healing_incident SET search = to_tsvector('simple', %s) WHERE id = %s",
            [text, incident_id],
        )
