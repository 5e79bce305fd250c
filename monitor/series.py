"""Chart series for one host over a time range: raw checkpoints, then 1-minute rollups.

Raw checkpoints are kept for days (monitor/retention.py); a minute of the range with none
left is drawn from its rollup, so an old incident and a month still draw.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection

from agent.checkpoint import decode
from monitor.models import Checkpoint, CheckpointRollup
from monitor.summary import SERIES_KEYS, summarize

MAX_POINTS = 1500
MINUTE_S = 60
RAW_EXTENT = "count(*), extract(epoch FROM max(c.collected_at) - min(c.collected_at))::float8"
ROLLUP_COLUMNS = "extract(epoch FROM r.minute)::float8, r.figures::text"


class _Part(NamedTuple):
    """One table's rows in the range, as SQL: `alias` names the table in `where`."""

    table: str
    alias: str
    order: str
    where: str
    params: list[Any]


def host_series(host_id: int, since: datetime, until: datetime | None = None) -> dict[str, Any]:
    """Return {"t": [epoch s...], key: [values...] for each of SERIES_KEYS}, oldest first.

    Long ranges are thinned in SQL to at most MAX_POINTS evenly spaced points of each kind,
    so a day of one-second checkpoints costs no more to draw than a few minutes of them. A
    rolled-up point is its minute's average, drawn at the middle of the minute.
    """
    raw, rolled = _raw_part(host_id, since, until), _rollup_part(host_id, since, until)
    raw_count, raw_span_s = _fetch_one(raw, RAW_EXTENT)
    (rollup_count,) = _fetch_one(rolled, "count(*)")
    # Each part gets its share of the time covered, and what the other part leaves unused.
    rollup_s = MINUTE_S * rollup_count
    share = round(MAX_POINTS * rollup_s / max(rollup_s + (raw_span_s or 0), 1))
    rollup_points = min(rollup_count, max(share, MAX_POINTS - raw_count))
    points = [
        _raw_point(text)
        for (text,) in _every_nth(raw, "c.data::text", raw_count, MAX_POINTS - rollup_points)
    ]
    points += [
        _rollup_point(at, text)
        for at, text in _every_nth(rolled, ROLLUP_COLUMNS, rollup_count, rollup_points)
    ]
    points.sort(key=lambda point: point["t"])
    return {"t": [p["t"] for p in points], **{k: [p.get(k) for p in points] for k in SERIES_KEYS}}


def _raw_part(host_id: int, since: datetime, until: datetime | None) -> _Part:
    where, params = "c.host_id = %s AND c.collected_at >= %s", [host_id, since]
    if until is not None:
        where, params = where + " AND c.collected_at < %s", [*params, until]
    return _Part(Checkpoint._meta.db_table, "c", "collected_at", where, params)


def _rollup_part(host_id: int, since: datetime, until: datetime | None) -> _Part:
    """Return the host's rollups in the range, of the minutes with no raw checkpoint left."""
    where, params = "r.host_id = %s AND r.minute >= %s", [host_id, since]
    if until is not None:
        where, params = where + " AND r.minute < %s", [*params, until]
    # One probe of the raw (host, collected_at) index per rollup: ~0.1 s for a month.
    where += (
        f" AND NOT EXISTS (SELECT 1 FROM {Checkpoint._meta.db_table} c"
        " WHERE c.host_id = r.host_id AND c.collected_at >= r.minute"
        " AND c.collected_at < r.minute + interval '1 minute')"
    )
    return _Part(CheckpointRollup._meta.db_table, "r", "minute", where, params)


def _fetch_one(part: _Part, columns: str) -> tuple[Any, ...]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {part.table} {part.alias} WHERE {part.where}",
                       part.params)  # fmt: skip
        return cursor.fetchone()


def _every_nth(part: _Part, columns: str, count: int, points: int) -> list[tuple[Any, ...]]:
    """Return `columns` of at most `points` evenly spaced rows, the newest kept, oldest first."""
    if not count:
        return []
    a = part.alias
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM (SELECT {a}.*, "
            f"row_number() OVER (ORDER BY {a}.{part.order} DESC) - 1 AS n "
            f"FROM {part.table} {a} WHERE {part.where}) {a} "
            f"WHERE n %% %s = 0 ORDER BY {a}.{part.order}",
            [*part.params, math.ceil(count / max(points, 1))],
        )
        return cursor.fetchall()


def _raw_point(text: str) -> dict[str, Any]:
    figures = summarize(decode(text))
    return {"t": figures["collected_at"], **{key: figures.get(key) for key in SERIES_KEYS}}


def _rollup_point(minute_epoch_s: float, text: str) -> dict[str, Any]:
    figures = json.loads(text)  # {series: [avg, min, max]}
    return {"t": minute_epoch_s + MINUTE_S / 2, **{k: figures[k][0] for k in figures}}
