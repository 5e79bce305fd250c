"""Store the events a checkpoint carries: transitions, errors, GPU events, validation reports.

Each poll asks the agent for the events after the highest id stored for its current run
(`Host.events_seen`), so an answer lost on the way is sent again and nothing is stored twice.
When the agent restarted (a new `agent_started_at`), its ids start again at 1: the answer to
a question about the old run is ignored, and the next poll asks for everything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
from django.db.models import Q

from agent.checkpoint import Checkpoint, ErrorEvent
from monitor.models import GpuEvent, Host, LifecycleTransition, ValidationReport, VllmError

# A repeat of the same error within this gap extends its episode instead of opening another.
EPISODE_GAP = timedelta(minutes=10)
TRACEBACK_CHARS = 20_000


@dataclass
class EventRows:
    transitions: list[LifecycleTransition] = field(default_factory=list)
    gpu_events: list[GpuEvent] = field(default_factory=list)
    validations: list[ValidationReport] = field(default_factory=list)
    errors: list[tuple[Host, ErrorEvent]] = field(default_factory=list)
    hosts: set[int] = field(default_factory=set)  # hosts that brought new events

    def save(self) -> None:
        LifecycleTransition.objects.bulk_create(self.transitions)
        GpuEvent.objects.bulk_create(self.gpu_events)
        ValidationReport.objects.bulk_create(self.validations)
        save_errors(self.errors)


def take_events(host: Host, cp: Checkpoint, asked_since: int, rows: EventRows) -> None:
    """Add the checkpoint's events that are new to us to `rows`; advance host.events_seen."""
    if host.agent_started_at != cp.agent_started_at:
        host.agent_started_at, host.events_seen = cp.agent_started_at, 0
        if asked_since:
            return
    seen = host.events_seen
    transitions = [t for t in cp.transitions if t.id > seen]
    gpu_events = [e for e in cp.gpu_events if e.id > seen]
    validations = [r for r in cp.validations if r.id > seen]
    errors = [_dated(e, cp.collected_at) for e in cp.errors if e.id > seen]
    rows.transitions += [
        LifecycleTransition(
            host=host,
            at=_at(t.at),
            from_state=t.from_state.value,
            to_state=t.to_state.value,
            trigger=clean(t.trigger),
        )
        for t in transitions
    ]
    rows.gpu_events += [
        GpuEvent(
            host=host,
            at=_at(e.at),
            gpu_index=e.gpu_index,
            kind=e.kind,
            severity=e.severity,
            xid=e.xid,
            message=clean(e.message),
            action=clean(e.action),
        )
        for e in gpu_events
    ]
    rows.validations += [
        ValidationReport(
            host=host,
            at=_at(r.at),
            trigger=r.trigger,
            blocked=r.blocked,
            status=r.status,
            checks=msgspec.to_builtins(r.checks),
        )
        for r in validations
    ]
    rows.errors += [(host, e) for e in errors]
    if transitions or gpu_events or validations or errors:
        rows.hosts.add(host.pk)
    host.events_seen = max(seen, cp.event_seq)


def _dated(event: ErrorEvent, fallback: float) -> ErrorEvent:
    first = event.first_seen_at or event.last_seen_at or fallback
    return dataclasses.replace(event, first_seen_at=first, last_seen_at=event.last_seen_at or first)


def save_errors(errors: Sequence[tuple[Host, ErrorEvent]]) -> None:
    """Store classified errors, adding repeats to the open episode of the same signature."""
    if not errors:
        return
    episodes = _open_episodes(errors)
    new: list[VllmError] = []
    for host, event in errors:
        first, last = _at(event.first_seen_at), _at(event.last_seen_at)
        episode = episodes.get((host.pk, event.signature or event.message))
        if episode is not None and first - episode.last_seen_at <= EPISODE_GAP:
            episode.count += event.count
            episode.last_seen_at = max(episode.last_seen_at, last)
            episode.save(update_fields=["count", "last_seen_at"])
            continue
        episode = VllmError(
            host=host,
            category=event.category,
            message=clean(event.message)[:5000],
            signature=clean(event.signature or event.message)[:500],
            count=event.count,
            first_seen_at=first,
            last_seen_at=last,
            traceback=clean(event.traceback)[:TRACEBACK_CHARS],
            fields=event.fields,
        )
        episodes[(host.pk, event.signature or event.message)] = episode
        new.append(episode)
    VllmError.objects.bulk_create(new)


def _open_episodes(errors: Sequence[tuple[Host, ErrorEvent]]) -> dict[tuple[int, str], VllmError]:
    since = min(_at(e.first_seen_at) for _, e in errors) - EPISODE_GAP
    wanted = Q()
    for host, event in errors:
        wanted |= Q(host_id=host.pk, signature=(event.signature or event.message)[:500])
    episodes: dict[tuple[int, str], VllmError] = {}
    for row in VllmError.objects.filter(wanted, last_seen_at__gte=since).order_by("last_seen_at"):
        episodes[(row.host_id, row.signature)] = row  # the newest wins
    return episodes


def _at(epoch_s: float | None) -> datetime:
    return datetime.fromtimestamp(epoch_s or 0.0, tz=UTC)


def clean(text: str) -> str:
    """Return agent-supplied text fit for a PostgreSQL text column (no NUL characters)."""
    return text.replace("\x00", "\ufffd")
