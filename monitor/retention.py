"""Delete old raw checkpoints in bulk, in batches that keep each transaction short."""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from monitor.models import Checkpoint

BATCH_ROWS = 50_000


def delete_checkpoints_before(cutoff: datetime, batch_rows: int = BATCH_ROWS) -> int:
    """Return how many checkpoints received before `cutoff` were deleted."""
    table = Checkpoint._meta.db_table
    # Ids grow with received_at, so "the oldest N ids below the cutoff" walks the BRIN-ordered
    # heap from the front; each batch commits on its own.
    sql = (
        f"DELETE FROM {table} WHERE id IN ("
        f"SELECT id FROM {table} WHERE received_at < %s ORDER BY id LIMIT %s)"
    )
    total = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [cutoff, batch_rows])
            total += cursor.rowcount
            if cursor.rowcount < batch_rows:
                return total
