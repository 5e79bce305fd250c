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
from learning.window import MAX_READING
from monitor.models import Checkpoint, CheckpointRollup, Host
from monitor.summary import GB

BATCH_ROWS = 50_000
# One INSERT ... SELECT per 10 minutes of checkpoints: 120,000 of them for 1,000 hosts at a
# 5 s poll, a few seconds' work.
ROLLUP_BATCH = timedelta(minutes=10)
MIN_READING = 1e-12  # smaller than any figure resolves (the charts round to 4 places)


def _reading(sql: str) -> str:
    """Return `sql`, a number read from a checkpoint, as the rollup takes it: missing beyond
    MAX_READING (learning/window.py: no host's figure comes near it), and 0 when it is
    smaller than any figure resolves. PostgreSQL raises on a float that overflows or
    underflows, and one checkpoint's 1.7e308 or 5e-324 (both valid readings) would stop the
    rollup of every host in its ten minutes, and with it the pruning."""
    return (f"(CASE WHEN abs({sql}) <= {MAX_READING:g} THEN "
            f"CASE WHEN abs({sql}) >= {MIN_READING:g} THEN {sql} ELSE 0 END END)")  # fmt: skip


def _gpu(name: str) -> str:
    return _reading(f"(gpu->>'{name}')::float8")


# Each rolled-up series as SQL, computed as monitor/summary.py's `summarize` does: the chart
# series, plus GPU temperature, utilisation and preemptions under summarize's names. They read
# the parts of a checkpoint that _READ_CHECKPOINT takes apart: `v` (vllm), `r` (its rates),
# `v.latency` and `g` (over the GPUs: totals, and the fullest GPU's memory).
ROLLUP_SERIES = {
    "gpu_mem_used_gb": f"g.used_bytes / {GB}",
    "gpu_mem_total_gb": f"g.total_bytes / {GB}",
    "gpu_mem_fullest_used_gb": f"g.fullest[1][1] / {GB}",  # the GPU that runs out first
    "gpu_mem_fullest_total_gb": f"g.fullest[1][2] / {GB}",
    "gpu_temperature_c": "g.temperature_c",  # the hottest GPU
    "gpu_utilization_pct": "g.utilization_pct",  # the mean over GPUs
    "kv_cache_usage_pct": _reading("v.kv_cache_usage_pct"),
    "requests_running": _reading("v.requests_running"),
    "requests_waiting": _reading("v.requests_waiting"),
    "prompt_tokens_per_s": _reading("r.prompt_tokens_per_s"),
    "generation_tokens_per_s": _reading("r.generation_tokens_per_s"),
    "preemptions_per_s": _reading("r.preemptions_per_s"),
    **{
        f"{key}_{p}_s": _reading(f"(v.latency #>> '{{{key},{p}_s}}')::float8")
        for key in ("ttft", "itl", "e2e")
        for p in ("p50", "p99")
    },
}

# Take each checkpoint's JSON apart once: every `c.data ->` would fetch and decompress the
# whole TOASTed value again (16 series: 16 times, ten times slower).
_READ_CHECKPOINT = (
    "CROSS JOIN LATERAL jsonb_to_record(c.data) AS d(vllm jsonb, gpus jsonb) "
    "CROSS JOIN LATERAL jsonb_to_record(d.vllm) AS v(kv_cache_usage_pct float8, "
    "requests_running float8, requests_waiting float8, rates jsonb, latency jsonb) "
    "CROSS JOIN LATERAL jsonb_to_record(v.rates) AS r(prompt_tokens_per_s float8, "
    "generation_tokens_per_s float8, preemptions_per_s float8) "
    "CROSS JOIN LATERAL (SELECT sum(m.used) AS used_bytes, sum(m.total) AS total_bytes,"
    " max(m.temperature_c) AS temperature_c, avg(m.utilization_pct) AS utilization_pct,"
    # The fullest GPU's [used, total], by share, as learning.window.fullest_gpu picks it.
    " (array_agg(ARRAY[m.used, m.total] ORDER BY m.used / nullif(m.total, 0) DESC)"
    " FILTER (WHERE m.total > 0 AND m.used >= 0)) AS fullest"
    f" FROM (SELECT {_gpu('memory_used_bytes')} AS used, {_gpu('memory_total_bytes')} AS total,"
    f" {_gpu('temperature_c')} AS temperature_c, {_gpu('utilization_gpu_pct')} AS utilization_pct"
    " FROM jsonb_array_elements(d.gpus) AS gpu) m) g"
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

    `end` is a whole minute. It starts after the latest minute already rolled up (or at the
    oldest checkpoint), so each run folds only the new part; a minute rolled up again keeps
    its first rollup.
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
    of one of their host's incidents. It walks the table by id, `batch_rows` ids a batch from
    the oldest, and stops at the first checkpoint received after `cutoff` (ids grow with
    received_at), so each batch reads only its own rows and those kept are read once a run.
    """
    params = {"cutoff": cutoff, "rolled_until": rolled_until, "now": now,
              "before": window.before, "after": window.after}  # fmt: skip
    total, start = 0, _next_checkpoint(0, cutoff)
    while start is not None:
        params.update(start=start, stop=start + batch_rows)
        with connection.cursor() as cursor:
            cursor.execute(_DELETE_RAW_SQL, params)
            total += cursor.rowcount
        start = _next_checkpoint(start + batch_rows, cutoff)
    return total


def _next_checkpoint(from_id: int, cutoff: datetime) -> int | None:
    """Return the first id from `from_id` on, unless that checkpoint came after `cutoff`."""
    sql = (
        f"SELECT id, received_at < %s FROM {Checkpoint._meta.db_table} "
        "WHERE id >= %s ORDER BY id LIMIT 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [cutoff, from_id])
        row = cursor.fetchone()
    return row[0] if row and row[1] else None


def delete_rollups_before(cutoff: datetime, batch_rows: int = BATCH_ROWS) -> int:
    """Return how many rollups of minutes before `cutoff` were deleted."""
    table = CheckpointRollup._meta.db_table
    sql = (
        f"DELETE FROM {table} WHERE id = ANY(ARRAY("
        f"SELECT id FROM {table} WHERE minute < %s ORDER BY id LIMIT %s))"
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
    latest = _over_hosts("max", CheckpointRollup._meta.db_table, "minute")
    return None if latest is None else latest + timedelta(minutes=1)


def _oldest_checkpoint() -> datetime | None:
    oldest = _over_hosts("min", Checkpoint._meta.db_table, "collected_at")
    return None if oldest is None else _minute(oldest)


def _over_hosts(extreme: str, table: str, column: str) -> datetime | None:
    """The fleet's min or max of `column`, from each host's (host, column) index: one probe per
    host rather than a scan of the table."""
    sql = (
        f"SELECT {extreme}(each.at) FROM {Host._meta.db_table} h CROSS JOIN LATERAL ("
        f"SELECT {extreme}({column}) AS at FROM {table} t WHERE t.host_id = h.id) each"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        found: datetime | None = cursor.fetchone()[0]
    return found


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
        f"FROM {Checkpoint._meta.db_table} c {_READ_CHECKPOINT} "
        f"WHERE c.host_id = ANY(ARRAY(SELECT id FROM {Host._meta.db_table})) "
        "AND c.collected_at >= %s AND c.collected_at < %s) AS rows "
        "GROUP BY host_id, minute "
        "ON CONFLICT (host_id, minute) DO NOTHING"
    )


def _delete_raw_sql() -> str:
    return (
        f"DELETE FROM {Checkpoint._meta.db_table} c "
        "WHERE c.id >= %(start)s AND c.id < %(stop)s "
        "AND c.received_at < %(cutoff)s AND c.collected_at < %(rolled_until)s "
        f"AND NOT EXISTS (SELECT 1 FROM {Incident._meta.db_table} i "
        "WHERE i.host_id = c.host_id "
        "AND i.opened_at <= c.collected_at + %(before)s "
        "AND c.collected_at <= coalesce(i.resolved_at, %(now)s) + %(after)s)"
    )


_ROLLUP_SQL = _rollup_sql()
_DELETE_RAW_SQL = _delete_raw_sql()
