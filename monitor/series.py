"""Chart series for one host over a time window, read straight from the checkpoint table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection

from agent.checkpoint import decode
from monitor.models import Checkpoint
from monitor.summary import SERIES_KEYS, summarize

MAX_POINTS = 1500


def host_series(host_id: int, since: datetime) -> dict[str, Any]:
    """Return {"t": [epoch s...], key: [values...] for each of SERIES_KEYS}, oldest first.

    Long windows are thinned to at most MAX_POINTS evenly spaced checkpoints in SQL, so a
    day of one-second checkpoints costs no more to draw than a few minutes of them.
    """
    columns: dict[str, list[Any]] = {"t": [], **{key: [] for key in SERIES_KEYS}}
    for text in _checkpoint_texts(host_id, since):
        figures = summarize(decode(text))
        columns["t"].append(figures["collected_at"])
        for key in SERIES_KEYS:
            columns[key].append(figures.get(key))
    return columns


def _checkpoint_texts(host_id: int, since: datetime) -> list[str]:
    table = Checkpoint._meta.db_table
    where = "host_id = %s AND collected_at >= %s"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE {where}", [host_id, since])
        stride = max(1, -(-cursor.fetchone()[0] // MAX_POINTS))
        cursor.execute(
            f"SELECT data::text FROM (SELECT data, collected_at, "
            f"row_number() OVER (ORDER BY collected_at DESC) - 1 AS n "
            f"FROM {table} WHERE {where}) recent WHERE n %% %s = 0 ORDER BY collected_at",
            [host_id, since, stride],
        )
        return [row[0] for row in cursor.fetchall()]
