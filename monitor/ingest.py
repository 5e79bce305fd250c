"""Store a batch of poll results: checkpoints, lifecycle transitions, host status, errors.

Checkpoints go in with one COPY per batch. If the batch is refused, rows are retried one by
one so a single bad row costs only itself (recorded as an ingest error), never its neighbours.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from psycopg.types.json import Jsonb

from agent.checkpoint import Checkpoint, encode
from monitor import polling, summary
from monitor.agent_events import EventRows, clean, take_events
from monitor.models import Checkpoint as CheckpointRow
from monitor.models import Host, IngestError, LifecycleTransition

log = logging.getLogger(__name__)

# An agent clock this far ahead of ours is wrong; we keep our receive time instead.
MAX_CLOCK_AHEAD = timedelta(seconds=60)
# PostgreSQL's jsonb refuses \u0000; an unescaped one (not preceded by a backslash) becomes U+FFFD.
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
# Host columns a poll changes, with their SQL types for the VALUES list of _update_hosts.
_HOST_COLUMNS = {
    "status": "text",
    "status_reason": "text",
    "lifecycle_state": "text",
    "last_seen_at": "timestamptz",
    "last_polled_at": "timestamptz",
    "latest": "jsonb",
    "agent_started_at": "float8",
    "events_seen": "bigint",
}


@dataclass
class StoreReport:
    stored: list[tuple[Host, dict[str, Any]]] = field(default_factory=list)  # host, summary
    checkpoints: list[tuple[Host, Checkpoint]] = field(default_factory=list)  # for the analysis
    changed_hosts: list[Host] = field(default_factory=list)
    hosts_with_events: set[int] = field(default_factory=set)  # new transitions, errors, ...
    duplicates: int = 0
    failed: int = 0
    samples: int = 0


def store_poll_results(
    hosts: dict[int, Host], results: Sequence[polling.PollResult], now: datetime
) -> StoreReport:
    """Store what a poll brought and bring each polled host's status up to date."""
    report = StoreReport()
    # A host deleted while its poll was in flight has nothing left to store into.
    alive = set(Host.objects.filter(pk__in=hosts).values_list("pk", flat=True))
    hosts = {pk: host for pk, host in hosts.items() if pk in alive}
    results = [r for r in results if r.target.host_id in alive]
    rows: list[tuple[Host, Checkpoint, datetime]] = []
    errors: list[IngestError] = []
    events = EventRows()
    for result in results:
        host = hosts[result.target.host_id]
        host.last_polled_at = now
        if result.checkpoint is None:
            errors.extend(_record_failure(host, result, now, report))
        elif _is_duplicate(host, result.checkpoint):
            report.duplicates += 1
        else:
            rows.append((host, result.checkpoint, _collected_at(result.checkpoint, now)))
    asked = {r.target.host_id: r.target.events_since for r in results}
    for host, cp, at in rows:
        _apply_checkpoint(host, cp, at, now, report, events, asked[host.pk])
    with transaction.atomic():
        errors.extend(_insert_checkpoints(rows, now))
        events.save()
        IngestError.objects.bulk_create(errors)
        _update_hosts(list(hosts.values()))
    report.changed_hosts = list(hosts.values())
    report.hosts_with_events = events.hosts
    return report


def _record_failure(
    host: Host, result: polling.PollResult, now: datetime, report: StoreReport
) -> list[IngestError]:
    report.failed += 1
    status = Host.Status.UNREACHABLE if result.unreachable else Host.Status.DEGRADED
    reason = clean(result.error)[:500]
    # Record a new episode, not every repeat of the same one (a dead host is polled each second).
    is_new = host.status != status or host.status_reason != reason
    host.status, host.status_reason = status, reason
    if not is_new:
        return []
    return [
        IngestError(
            host=host,
            at=now,
            kind=result.error_kind,
            message=clean(result.error),
            payload_excerpt=clean(polling.excerpt(result.payload)),
        )
    ]


def _is_duplicate(host: Host, cp: Checkpoint) -> bool:
    latest = host.latest or {}
    return latest.get("agent_started_at") == cp.agent_started_at and cp.seq <= latest.get("seq", -1)


def _collected_at(cp: Checkpoint, now: datetime) -> datetime:
    at = datetime.fromtimestamp(cp.collected_at, tz=UTC)
    return now if at - now > MAX_CLOCK_AHEAD else at


def _apply_checkpoint(
    host: Host,
    cp: Checkpoint,
    at: datetime,
    now: datetime,
    report: StoreReport,
    events: EventRows,
    asked_since: int,
) -> None:
    figures = summary.summarize(cp)
    # The analysis checks it saw this one, so a window it keeps never has a hole.
    figures["previous_collected_at"] = (host.latest or {}).get("collected_at")
    report.stored.append((host, figures))
    report.checkpoints.append((host, cp))
    report.samples += cp.vllm.samples if cp.vllm else 0
    before = len(events.transitions)
    take_events(host, cp, asked_since, events)
    state = cp.lifecycle_state.value
    if state != host.lifecycle_state and len(events.transitions) == before:
        # An agent without a tracker reports states but no transitions: record what we saw.
        events.transitions.append(
            LifecycleTransition(
                host=host,
                at=at,
                from_state=host.lifecycle_state,
                to_state=state,
                trigger=clean(cp.lifecycle_detail),
            )
        )
        events.hosts.add(host.pk)
    host.status, reason = summary.host_status(cp)
    host.status_reason = clean(reason)[:500]
    host.lifecycle_state = state
    host.last_seen_at = now
    host.latest = figures


def _insert_checkpoints(
    rows: Sequence[tuple[Host, Checkpoint, datetime]], now: datetime
) -> list[IngestError]:
    records = [
        (host.pk, at, now, cp.lifecycle_state.value, _json_text(cp)) for host, cp, at in rows
    ]
    if not records:
        return []
    try:
        with transaction.atomic():
            _copy(records)
        return []
    except DatabaseError:
        log.warning("batch COPY of %d checkpoints refused; storing them one by one", len(records))
    errors = []
    for (host, _cp, _at), record in zip(rows, records, strict=True):
        try:
            with transaction.atomic():
                _copy([record])
        except DatabaseError as exc:
            errors.append(_storage_error(host, now, exc, record[4]))
    return errors


def _update_hosts(hosts: Sequence[Host]) -> None:
    """Write every polled host's current columns in one UPDATE ... FROM (VALUES ...).

    Django's bulk_update builds a CASE per column per row, which cost more CPU than the
    whole rest of a poll; one VALUES list is a single cheap statement.
    """
    if not hosts:
        return
    names = list(_HOST_COLUMNS)
    row = "(" + ", ".join(["%s"] + [f"%s::{t}" for t in _HOST_COLUMNS.values()]) + ")"
    assignments = ", ".join(f"{name} = v.{name}" for name in names)
    sql = (
        f"UPDATE {Host._meta.db_table} AS h SET {assignments} "
        f"FROM (VALUES {', '.join([row] * len(hosts))}) AS v(id, {', '.join(names)}) "
        "WHERE h.id = v.id"
    )
    params: list[Any] = []
    for host in hosts:
        params.append(host.pk)
        params += [_sql_value(getattr(host, name)) for name in names]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _sql_value(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict) else value


def _copy(records: Sequence[tuple[Any, ...]]) -> None:
    table = CheckpointRow._meta.db_table
    columns = "host_id, collected_at, received_at, lifecycle_state, data"
    # COPY goes to psycopg directly; wrap its errors as Django's, like every other query.
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for record in records:
            copy.write_row(record)


def _json_text(cp: Checkpoint) -> str:
    return _NUL_ESCAPE.sub(rb"\1\\ufffd", encode(cp)).decode()


def _storage_error(host: Host, now: datetime, exc: DatabaseError, text: str) -> IngestError:
    host.status, host.status_reason = Host.Status.DEGRADED, f"checkpoint not stored: {exc}"[:500]
    return IngestError(
        host=host,
        at=now,
        kind=IngestError.Kind.INVALID_PAYLOAD,
        message=f"the database refused the checkpoint: {exc}",
        payload_excerpt=clean(text[: polling.EXCERPT_CHARS]),
    )
