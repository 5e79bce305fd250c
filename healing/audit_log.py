"""Reading the audit log: filters from a query string, the matching entries newest first, and
their export as CSV or JSON, written a batch at a time so a big log never sits in memory.

Filters: `actor` (a username, exactly), `action` ("login" also matches "login.failed"),
`target` (text it contains), `since` and `until` (healing/moments.py: a date, a date and
time, or an age like 7d; a date alone as `until` takes in that whole day).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from healing.exports import spreadsheet_safe
from healing.models import AuditEntry
from healing.moments import parse_moment

BATCH = 1000
CSV_FIELDS = ("at", "actor", "action", "target", "reason", "detail")


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    action: str = ""
    target: str = ""
    since: datetime | None = None
    until: datetime | None = None  # exclusive


def parse_filter(params: Mapping[str, str]) -> tuple[AuditFilter, list[str]]:
    """Return the filter a query string asks for, and what is wrong with it (empty when fine)."""
    problems: list[str] = []
    since = _moment(params.get("since", ""), "since", problems, end_of_day=False)
    until = _moment(params.get("until", ""), "until", problems, end_of_day=True)
    if since and until and since >= until:
        problems.append("since must be before until")
    text = {k: (params.get(k) or "").strip()[:200] for k in ("actor", "action", "target")}
    return AuditFilter(**text, since=since, until=until), problems


def search(f: AuditFilter) -> QuerySet[AuditEntry]:
    """Return the entries that match `f`, newest first."""
    entries = AuditEntry.objects.all()
    if f.actor:
        entries = entries.filter(actor__iexact=f.actor)
    if f.action:
        entries = entries.filter(Q(action=f.action) | Q(action__startswith=f.action + "."))
    if f.target:
        entries = entries.filter(target__icontains=f.target)
    if f.since:
        entries = entries.filter(at__gte=f.since)
    if f.until:
        entries = entries.filter(at__lt=f.until)
    return entries.order_by("-at", "-pk")


def in_batches(entries: QuerySet[AuditEntry], size: int = BATCH) -> Iterator[AuditEntry]:
    """Yield every entry of `entries` (ordered newest first), one query per `size` of them.

    Keyset pages (at, pk) rather than a cursor: each query stands alone, so the export can be
    read across threads (the async server) and never holds a transaction open."""
    last: tuple[datetime, int] | None = None
    while True:
        page = entries
        if last is not None:
            page = entries.filter(Q(at__lt=last[0]) | Q(at=last[0], pk__lt=last[1]))
        rows = list(page[:size])
        yield from rows
        if len(rows) < size:
            return
        last = (rows[-1].at, rows[-1].pk)


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "reason": entry.reason,
        "detail": entry.detail,
    }


def csv_lines(entries: Iterator[AuditEntry]) -> Iterator[str]:
    """Yield a CSV header, then one line per entry (`detail` as JSON in one cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: list[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(list(CSV_FIELDS))
    for entry in entries:
        row = as_dict(entry)
        row["detail"] = json.dumps(row["detail"], sort_keys=True)
        yield line([spreadsheet_safe(str(row[field])) for field in CSV_FIELDS])


def json_lines(entries: Iterator[AuditEntry]) -> Iterator[str]:
    """Yield a JSON array of the entries, one entry per line."""
    yield "["
    separator = "\n"
    for entry in entries:
        yield separator + json.dumps(as_dict(entry), sort_keys=True)
        separator = ",\n"
    yield "\n]\n"


def _moment(text: str, name: str, problems: list[str], end_of_day: bool) -> datetime | None:
    if not text.strip():
        return None
    try:
        return parse_moment(text, end_of_day=end_of_day)
    except ValueError:
        problems.append(f"{name}={text!r}: use a date (2026-01-31) or a date and time")
        return None
