from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitor.models import Checkpoint, Host
from monitor.retention import delete_checkpoints_before
from monitor.tasks import prune_checkpoints

pytestmark = pytest.mark.django_db


def _checkpoints(host: Host, ages_h: list[float]) -> None:
    now = timezone.now()
    Checkpoint.objects.bulk_create(
        Checkpoint(
            host=host,
            collected_at=now - timedelta(hours=age),
            received_at=now - timedelta(hours=age),
            lifecycle_state="serving",
            data={},
        )
        for age in ages_h
    )


def test_it_deletes_only_checkpoints_older_than_the_cutoff_in_batches() -> None:
    host = Host.objects.create(name="gpu-01", agent_url="http://127.0.0.1:1", agent_token="t")
    _checkpoints(host, [10, 9, 8, 7, 6, 1, 0.5])

    deleted = delete_checkpoints_before(timezone.now() - timedelta(hours=2), batch_rows=2)

    assert deleted == 5
    assert Checkpoint.objects.count() == 2


def test_it_prunes_by_the_retention_setting(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CHECKPOINT_RETENTION_DAYS = 7
    host = Host.objects.create(name="gpu-01", agent_url="http://127.0.0.1:1", agent_token="t")
    _checkpoints(host, [24 * 8, 24 * 7.5, 24 * 6, 1])

    assert prune_checkpoints().startswith("deleted 2 checkpoints")
    assert Checkpoint.objects.count() == 2
