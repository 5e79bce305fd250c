"""Keep checkpoints as long as they are useful: raw for days, as 1-minute rollups for months.

`apply_retention` runs the three steps, each in SQL over batches that commit on their own:

1. Roll up: fold the raw checkpoints of every minute about to be pruned into one
   CheckpointRollup per host-minute (avg, min and max of each chart series, the count, the
   last lifecycle state). A minute is rolled up once: ON CONFLICT DO NOTHING.
2. Prune raw: delete checkpoints received before the raw cutoff, but only those of minutes
   already rolled up, and none in an incident's window (from `before` ahead of its opening
   to `after` past its resolution, or to now while it is unresolved).
3. Prune rollups older than their own cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection

from healing.models import Incident
from monitor.models import Checkpoint, CheckpointRollup, Host

BATCH_ROWS = 50_000
# One INSERT ... SELECT per hour of checkpoints: 720 rows per host at a 5 s poll.
ROLLUP_BATCH = timedelta(hours=1)
GB = 1024**3


def _number(*path: str) -> str:
    return f"(c.data #>> '{{{','.join(path)}}}')::float8"


# Each rolled-up series as SQL over a checkpoint row `c` and its GPU totals `g`, computed as
# monitor/summary.py's `summarize` does: the chart series, plus GPU temperature, utilisation
# and preemptions under summarize's names.
ROLLUP_SERIES = {
    "gpu_mem_used_gb": f"g.used_bytes / {GB}",
    "gpu_mem_total_gb": f"g.total_bytes / {GB}",
    "gpu_temperature_c": "g.temperature_c",  # the hottest GPU
    "gpu_utilization_pct": "g.utilization_pct",  # the mean over GPUs
    "kv_cache_usage_pct": _number("vllm", "kv_cache_usage_pct"),
    "requests_running": _number("vllm", "requests_running"),
    "requests_waiting": _number("vllm", "requests_waiting"),
    "prompt_tokens_per_s": _number("vllm", "rates", "prompt_tokens_per_s"),
    "generation_tokens_per_s": _number("vllm", "rates", "generation_tokens_per_s"),
    "preemptions_per_s": _number("vllm", "rates", "preemptions_per_s"),
    **{
        f"{key}_{p}_s": _number("vllm", "latency", key, f"{p}_s")
        for key in ("ttft", "itl", "e2e")
        for p in ("p50", "p99")
    },
}

_GPU_TOTALS = (
    "SELECT sum((gpu->>'memory_used_bytes')::float8) AS used_bytes,"
    " sum((gpu->>'memory_total_bytes')::float8) AS total_bytes,"
    " max((gpu->>'temperature_c')::float8) AS temperature_c,"
    " avg((gpu->>'utilization_gpu_pct')::float8) AS utilization_pct"
    " FROM jsonb_array_elements(c.data->'gpus') AS gpu"
)


@dataclass(frozen=True)
class IncidentWindow:
    """How much raw history to keep around an incident, before it opened and after it ended."""

    before: timedelta
    after: timedelta


@dataclass(frozen=True)
class Pruned:
    rolled_up: int  # host-minutes written
    deleted: int  # raw checkpoints
    rollups_deleted: int


def apply_retention(
    now: datetime, keep_raw: timedelta, keep_rollups: timedelta, window: IncidentWindow
) -> Pruned:
    """Roll up what is about to be pruned, then prune raw checkpoints, then old rollups."""
    cutoff = now - keep_raw
    rolled_until = _minute(cutoff)
    rolled_up = roll_up_before(rolled_until)
    deleted = delete_checkpoints_before(cutoff, now, window, rolled_until=rolled_until)
    return Pruned(rolled_up, deleted, delete_rollups_before(now - keep_rollups))


def roll_up_before(end: datetime, batch: timedelta = ROLLUP_BATCH) -> int:
    """Return how many host-minutes were rolled up, of the minutes before `end` not yet done.

    It starts after the latest minute already rolled up (or at the oldest checkpoint), so
    each run folds only the new part; a minute rolled up again keeps its first rollup.
    """
    start = _rolled_up_until() or _oldest_checkpoint()
    if start is None:
        return 0
    total = 0
    while start < end:
        stop = min(start + batch, end)
        total += roll_up(start, stop)
        start = stop
    return total


def roll_up(start: datetime, end: datetime) -> int:
    """Return how many host-minutes from `start` to `end` (whole minutes) were newly rolled up."""
    with connection.cursor() as cursor:
        cursor.execute(_ROLLUP_SQL, [start, end])
        return cursor.rowcount


def delete_checkpoints_before(
    cutoff: datetime,
    now: datetime,
    window: IncidentWindow,
    *,
    rolled_until: datetime,
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Return how many checkpoints received before `cutoff` were deleted.

    Kept: those collected from `rolled_until` on (not rolled up yet) and those in the window
    of one of their host's incidents.
    """
    params = {
        "cutoff": cutoff,
        "rolled_until": rolled_until,
        "now": now,
        "before": window.before,
        "after": window.after,
        "batch_rows": batch_rows,
        "after_id": 0,
    }
    total = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_DELETE_RAW_SQL, params)
            deleted, last_id = cursor.fetchone()
        total += deleted
        if deleted < batch_rows:
            return total
        # Walk on by id: the checkpoints kept in incident windows are passed over only once.
        params["after_id"] = last_id


def delete_rollups_before(cutoff: datetime, batch_rows: int = BATCH_ROWS) -> int:
    """Return how many rollups of minutes before `cutoff` were deleted."""
    table = CheckpointRollup._meta.db_table
    sql = (
        f"DELETE FROM {table} WHERE id IN ("
        f"SELECT id FROM {table} WHERE minute < %s ORDER BY id LIMIT %s)"
    )
    total = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [cutoff, batch_rows])
            total += cursor.rowcount
            if cursor.rowcount < batch_rows:
                return total


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _rolled_up_until() -> datetime | None:
    # The latest minute of each host from the (host, minute) index: one probe per host.
    sql = (
        f"SELECT max(last.minute) FROM {Host._meta.db_table} h CROSS JOIN LATERAL ("
        f"SELECT max(minute) AS minute FROM {CheckpointRollup._meta.db_table} r "
        f"WHERE r.host_id = h.id) last"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        latest = cursor.fetchone()[0]
    return None if latest is None else latest + timedelta(minutes=1)


def _oldest_checkpoint() -> datetime | None:
    sql = (
        f"SELECT min(first.at) FROM {Host._meta.db_table} h CROSS JOIN LATERAL ("
        f"SELECT min(collected_at) AS at FROM {Checkpoint._meta.db_table} c "
        f"WHERE c.host_id = h.id) first"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        oldest = cursor.fetchone()[0]
    return None if oldest is None else _minute(oldest)


def _figure(key: str) -> str:
    avg, low, high = (f"round({f}({key})::numeric, 4)" for f in ("avg", "min", "max"))
    return f"CASE WHEN count({key}) > 0 THEN jsonb_build_array({avg}, {low}, {high}) END"


def _rollup_sql() -> str:
    columns = ", ".join(f"{sql} AS {key}" for key, sql in ROLLUP_SERIES.items())
    figures = ", ".join(f"'{key}', {_figure(key)}" for key in ROLLUP_SERIES)
    # `host_id = ANY(all hosts)` reads the (host, collected_at) index once per host and the
    # heap in physical order (a bitmap scan), by the agents' clock as the charts are drawn.
    return (
        f"INSERT INTO {CheckpointRollup._meta.db_table} "
        "(host_id, minute, samples, lifecycle_state, figures) "
        "SELECT host_id, minute, count(*), "
        "(array_agg(lifecycle_state ORDER BY collected_at DESC))[1], "
        f"jsonb_strip_nulls(jsonb_build_object({figures})) "
        "FROM (SELECT c.host_id, date_trunc('minute', c.collected_at) AS minute, "
        f"c.collected_at, c.lifecycle_state, {columns} "
        f"FROM {Checkpoint._meta.db_table} c CROSS JOIN LATERAL ({_GPU_TOTALS}) g "
        f"WHERE c.host_id = ANY(ARRAY(SELECT id FROM {Host._meta.db_table})) "
        "AND c.collected_at >= %s AND c.collected_at < %s) AS rows "
        "GROUP BY host_id, minute "
        "ON CONFLICT (host_id, minute) DO NOTHING"
    )


def _delete_raw_sql() -> str:
    table = Checkpoint._meta.db_table
    return (
        f"WITH gone AS (DELETE FROM {table} WHERE id IN ("
        f"SELECT c.id FROM {table} c "
        "WHERE c.received_at < %(cutoff)s AND c.collected_at < %(rolled_until)s "
        "AND c.id > %(after_id)s "
        f"AND NOT EXISTS (SELECT 1 FROM {Incident._meta.db_table} i "
        "WHERE i.host_id = c.host_id "
        "AND c.collected_at >= i.opened_at - %(before)s "
        "AND c.collected_at <= coalesce(i.resolved_at, %(now)s) + %(after)s) "
        "ORDER BY c.id LIMIT %(batch_rows)s) RETURNING id) "
        "SELECT count(*), max(id) FROM gone"
    )


_ROLLUP_SQL = _rollup_sql()
_DELETE_RAW_SQL = _delete_raw_sql()
