from __future__ import annotations

import json
from datetime import datetime, timedelta
from statistics import mean

import pytest
from django.urls import reverse
from django.utils import timezone

from agent.checkpoint import encode
from agent.lifecycle import LifecycleState
from healing.models import Incident
from monitor import retention
from monitor.models import Checkpoint, CheckpointRollup, Host
from monitor.retention import (
    ROLLUP_SERIES,
    IncidentWindow,
    delete_checkpoints_before,
    delete_rollups_before,
    roll_up,
    roll_up_before,
)
from monitor.summary import SERIES_KEYS, summarize
from monitor.tasks import prune_checkpoints
from tests.factories import GIB, make_checkpoint, with_gpus

pytestmark = pytest.mark.django_db

WINDOW = IncidentWindow(before=timedelta(minutes=15), after=timedelta(minutes=5))


@pytest.fixture
def host() -> Host:
    return Host.objects.create(name="gpu-01", agent_url="http://127.0.0.1:1", agent_token="t")


def _host(name: str) -> Host:
    return Host.objects.create(name=name, agent_url="http://127.0.0.1:1", agent_token="t")


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


def _store(host: Host, at: datetime, **changes) -> Checkpoint:  # type: ignore[no-untyped-def]
    """Store a real checkpoint (the agent's JSON) collected and received at `at`."""
    cp = make_checkpoint(host=host.name, collected_at=at.timestamp(), **changes)
    return Checkpoint.objects.create(
        host=host,
        collected_at=at,
        received_at=at,
        lifecycle_state=cp.lifecycle_state.value,
        data=json.loads(encode(cp)),
    )


def _minute(days_ago: float) -> datetime:
    return (timezone.now() - timedelta(days=days_ago)).replace(second=0, microsecond=0)


def _incident(host: Host, opened_at: datetime, resolved_at: datetime | None = None) -> Incident:
    return Incident.objects.create(
        host=host,
        failure_type="kv_cache_exhausted",
        title="KV cache exhausted",
        state="resolved" if resolved_at else "open",
        opened_at=opened_at,
        updated_at=opened_at,
        resolved_at=resolved_at,
    )


def test_it_rolls_up_every_chart_series() -> None:
    assert set(SERIES_KEYS) <= set(ROLLUP_SERIES)


def test_it_rolls_a_minute_up_into_averages_extremes_the_count_and_the_last_state(host) -> None:  # type: ignore[no-untyped-def]
    minute = _minute(days_ago=8)
    figures = [
        # Stored out of order: the last state is the last collected, not the last stored.
        (50, dict(kv_cache_usage_pct=60.0, requests_waiting=9.0, gpu_temperature_c=83.0,
                  lifecycle_state=LifecycleState.DEGRADED, ttft_p99_s=1.5)),
        (5, dict(kv_cache_usage_pct=10.0, requests_waiting=0.0, gpu_temperature_c=61.0)),
        (20, dict(kv_cache_usage_pct=20.0, requests_waiting=3.0, gpu_temperature_c=70.0)),
        (55, dict(kv_cache_usage_pct=40.0, requests_waiting=6.0, gpu_temperature_c=75.0,
                  lifecycle_state=LifecycleState.SERVING)),
    ]  # fmt: skip
    rows = [_store(host, minute + timedelta(seconds=s), **changes) for s, changes in figures]
    _store(host, minute + timedelta(seconds=65), kv_cache_usage_pct=99.0)  # the next minute

    assert roll_up(minute, minute + timedelta(minutes=1)) == 1

    rollup = CheckpointRollup.objects.get(host=host)
    assert rollup.minute == minute
    assert rollup.samples == 4
    assert rollup.lifecycle_state == "serving"
    assert rollup.figures["kv_cache_usage_pct"] == [32.5, 10.0, 60.0]
    assert rollup.figures["requests_waiting"] == [4.5, 0.0, 9.0]
    assert rollup.figures["gpu_temperature_c"] == [72.25, 61.0, 83.0]
    assert rollup.figures["gpu_mem_used_gb"] == [74.0, 74.0, 74.0]
    # Every series is what the charts would have drawn from those checkpoints, averaged.
    drawn = [summarize(_decoded(row)) for row in rows]
    for key in ROLLUP_SERIES:
        values = [d[key] for d in drawn if d.get(key) is not None]
        if not values:
            assert key not in rollup.figures
            continue
        assert rollup.figures[key][0] == pytest.approx(mean(values), abs=1e-3), key
        assert rollup.figures[key][1:] == pytest.approx([min(values), max(values)], abs=1e-3)


def test_it_rolls_up_the_fullest_gpu_of_a_host_of_several(host) -> None:  # type: ignore[no-untyped-def]
    # The GPU that runs out first, by share: GPU 2 (75 of 80 GB) in the first checkpoint,
    # GPU 0 (the smaller one, 39 of 40 GB) in the second; the sums are all four GPUs'.
    minute = _minute(days_ago=8)
    for s, used in ((10, [40, 20, 75, 10]), (40, [39, 20, 70, 10])):
        cp = with_gpus(json.loads(encode(make_checkpoint(host=host.name))),
                       [u * GIB for u in used])  # fmt: skip
        cp["gpus"][0]["memory_total_bytes"] = 40 * GIB if s == 40 else 80 * GIB
        at = minute + timedelta(seconds=s)
        cp["collected_at"] = at.timestamp()
        Checkpoint.objects.create(host=host, collected_at=at, received_at=at,
                                  lifecycle_state="serving", data=cp)  # fmt: skip

    roll_up(minute, minute + timedelta(minutes=1))

    figures = CheckpointRollup.objects.get(host=host).figures
    assert figures["gpu_mem_fullest_used_gb"] == [57.0, 39.0, 75.0]
    assert figures["gpu_mem_fullest_total_gb"] == [60.0, 40.0, 80.0]
    assert figures["gpu_mem_used_gb"] == [142.0, 139.0, 145.0]
    drawn = [summarize(_decoded(c)) for c in Checkpoint.objects.filter(host=host)]
    assert sorted(d["gpu_mem_fullest_used_gb"] for d in drawn) == [39.0, 75.0]


def test_a_reading_no_host_can_have_does_not_stop_the_rollup_of_the_others(host) -> None:  # type: ignore[no-untyped-def]
    # Valid readings (non-negative floats) that PostgreSQL's arithmetic refuses: a sum that
    # overflows, a quotient that underflows. One such checkpoint failed the whole batch.
    minute, other = _minute(days_ago=8), _host("gpu-02")
    for s, v in ((5, 1.7e308), (20, 1.7e308), (35, 5e-324)):
        _store(host, minute + timedelta(seconds=s), requests_waiting=v,
               gpu_memory_used_bytes=v, gpu_memory_total_bytes=v)  # fmt: skip
    rows = [_store(other, minute + timedelta(seconds=s), requests_waiting=3.0) for s in (5, 20)]

    assert roll_up(minute, minute + timedelta(minutes=1)) == 2

    broken = CheckpointRollup.objects.get(host=host).figures
    assert broken["requests_waiting"] == [0.0, 0.0, 0.0]  # 1.7e308 missing, 5e-324 nothing
    assert broken["gpu_mem_used_gb"] == [0.0, 0.0, 0.0]
    assert broken["kv_cache_usage_pct"] == [32.0, 32.0, 32.0]
    assert CheckpointRollup.objects.get(host=other).figures["requests_waiting"] == [3.0, 3.0, 3.0]
    # As the charts drew them.
    assert [summarize(_decoded(r))["requests_waiting"] for r in rows] == [3.0, 3.0]
    drawn = [summarize(_decoded(c)) for c in Checkpoint.objects.filter(host=host)]
    assert sorted(str(d["requests_waiting"]) for d in drawn) == ["0.0", "None", "None"]


def test_it_leaves_out_series_not_measured_in_the_minute(host) -> None:  # type: ignore[no-untyped-def]
    minute = _minute(days_ago=8)
    _store(
        host,
        minute + timedelta(seconds=10),
        vllm=False,
        lifecycle_state=LifecycleState.FAILED_CUDA_OOM,
    )

    roll_up(minute, minute + timedelta(minutes=1))

    rollup = CheckpointRollup.objects.get(host=host)
    assert "kv_cache_usage_pct" not in rollup.figures
    assert rollup.figures["gpu_mem_total_gb"] == [80.0, 80.0, 80.0]
    assert rollup.lifecycle_state == "failed_cuda_oom"


def test_it_changes_nothing_when_rolling_up_the_same_minutes_twice(host) -> None:  # type: ignore[no-untyped-def]
    minute = _minute(days_ago=8)
    for s in (0, 10, 70, 80, 130):
        _store(host, minute + timedelta(seconds=s), kv_cache_usage_pct=float(s % 100))
    end = minute + timedelta(minutes=3)

    assert roll_up_before(end) == 3
    first = list(CheckpointRollup.objects.order_by("minute").values("minute", "samples", "figures"))
    _store(host, minute + timedelta(seconds=20), kv_cache_usage_pct=90.0)  # late, once rolled up
    assert roll_up_before(end) == 0
    assert roll_up(minute, end) == 0

    again = list(CheckpointRollup.objects.order_by("minute").values("minute", "samples", "figures"))
    assert again == first
    assert [r["samples"] for r in again] == [2, 2, 1]


def test_it_rolls_up_only_the_minutes_after_the_last_one_rolled_up(host) -> None:  # type: ignore[no-untyped-def]
    minute = _minute(days_ago=8)
    for m in range(5):
        _store(host, minute + timedelta(minutes=m, seconds=30))

    assert roll_up_before(minute + timedelta(minutes=2)) == 2
    assert roll_up_before(minute + timedelta(minutes=5), batch=timedelta(minutes=1)) == 3
    assert CheckpointRollup.objects.filter(host=host).count() == 5


def test_it_deletes_only_checkpoints_older_than_the_cutoff_in_batches(host) -> None:  # type: ignore[no-untyped-def]
    _checkpoints(host, [10, 9, 8, 7, 6, 1, 0.5])
    now = timezone.now()
    cutoff = now - timedelta(hours=2)

    deleted = delete_checkpoints_before(cutoff, now, WINDOW, rolled_until=cutoff, batch_rows=2)

    assert deleted == 5
    assert Checkpoint.objects.count() == 2


def test_it_keeps_checkpoints_not_rolled_up_yet(host) -> None:  # type: ignore[no-untyped-def]
    _checkpoints(host, [10, 9, 8, 7, 6])
    now = timezone.now()

    deleted = delete_checkpoints_before(
        now - timedelta(hours=2), now, WINDOW, rolled_until=now - timedelta(hours=8.5)
    )

    assert deleted == 2
    assert Checkpoint.objects.count() == 3


def test_it_keeps_checkpoints_around_open_and_resolved_incidents_and_prunes_the_rest() -> None:
    gpu1, gpu2 = _host("gpu-01"), _host("gpu-02")
    now = timezone.now()
    opened = now - timedelta(days=20)  # gpu-01's, still open
    _incident(gpu1, opened)
    resolved_opened, resolved = now - timedelta(days=10, hours=1), now - timedelta(days=10)
    _incident(gpu2, resolved_opened, resolved)
    kept = {
        (gpu1, opened - timedelta(minutes=14)),
        (gpu1, opened + timedelta(days=3)),
        (gpu1, now - timedelta(days=8)),  # the open incident keeps its host's raw data until now
        (gpu2, resolved_opened - timedelta(minutes=14)),
        (gpu2, resolved_opened + timedelta(minutes=30)),
        (gpu2, resolved + timedelta(minutes=4)),
        (gpu2, now - timedelta(days=1)),  # inside the raw retention
    }
    gone = {
        (gpu1, opened - timedelta(minutes=16)),
        (gpu2, opened + timedelta(minutes=1)),  # another host's incident keeps nothing here
        (gpu2, resolved_opened - timedelta(minutes=16)),
        (gpu2, resolved + timedelta(minutes=6)),
        (gpu2, now - timedelta(days=8)),
    }
    for host, at in sorted(kept | gone, key=lambda pair: pair[1]):
        _store(host, at)

    deleted = delete_checkpoints_before(
        now - timedelta(days=7), now, WINDOW, rolled_until=now - timedelta(days=7), batch_rows=2
    )

    assert deleted == len(gone)
    left = set(Checkpoint.objects.values_list("host__name", "collected_at"))
    assert left == {(host.name, at) for host, at in kept}


def test_it_rolls_up_then_prunes_by_the_retention_settings(settings, host) -> None:  # type: ignore[no-untyped-def]
    settings.CHECKPOINT_RETENTION_DAYS = 7
    settings.CHECKPOINT_ROLLUP_RETENTION_DAYS = 90
    _checkpoints(host, [24 * 8, 24 * 7.5, 24 * 6, 1])
    old = _minute(days_ago=100)
    CheckpointRollup.objects.create(
        host=host, minute=old, samples=12, lifecycle_state="serving", figures={}
    )

    summary = prune_checkpoints()

    assert summary == "rolled up 2 host-minutes, deleted 2 checkpoints and 1 rollups"
    assert Checkpoint.objects.count() == 2
    minutes = CheckpointRollup.objects.values_list("minute", flat=True)
    assert old not in minutes
    assert len(minutes) == 2


def test_it_deletes_rollups_past_their_retention_in_batches(host) -> None:  # type: ignore[no-untyped-def]
    for days_ago in (120, 100, 95, 91, 89, 1):
        CheckpointRollup.objects.create(
            host=host, minute=_minute(days_ago), samples=12, lifecycle_state="serving", figures={}
        )

    deleted = delete_rollups_before(timezone.now() - timedelta(days=90), batch_rows=2)

    assert deleted == 4
    assert CheckpointRollup.objects.count() == 2


def test_it_draws_an_old_range_from_rollups_where_no_raw_checkpoint_is_left(
    client, alice, settings, host
) -> None:  # type: ignore[no-untyped-def]
    settings.CHECKPOINT_RETENTION_DAYS = 7
    old = _minute(days_ago=20)
    for s, kv in [(5, 10.0), (35, 30.0), (65, 50.0), (95, 70.0)]:  # two old minutes
        _store(host, old + timedelta(seconds=s), kv_cache_usage_pct=kv)
    kept = old + timedelta(days=5, seconds=10)  # inside an incident's window: stays raw
    _incident(host, kept, kept + timedelta(minutes=1))
    _store(host, kept, kv_cache_usage_pct=90.0)
    recent = timezone.now() - timedelta(hours=1)
    _store(host, recent, kv_cache_usage_pct=64.0)
    prune_checkpoints()
    assert Checkpoint.objects.count() == 2
    client.force_login(alice)

    data = client.get(reverse("host_series", args=[host.name]), {"window": "30d"}).json()

    start = old.timestamp()
    assert data["window"] == "30d"
    assert data["t"] == pytest.approx([start + 30, start + 90, kept.timestamp(),
                                       recent.timestamp()])  # fmt: skip
    assert data["kv_cache_usage_pct"] == [20.0, 60.0, 90.0, 64.0]
    assert data["gpu_mem_total_gb"] == [80.0] * 4


def test_it_thins_rolled_up_points_and_keeps_the_newest(host, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from monitor import series

    monkeypatch.setattr(series, "MAX_POINTS", 10)
    old = _minute(days_ago=20)
    CheckpointRollup.objects.bulk_create(
        CheckpointRollup(host=host, minute=old + timedelta(minutes=m), samples=12,
                         lifecycle_state="serving", figures={"kv_cache_usage_pct": [m, m, m]})
        for m in range(100)
    )  # fmt: skip

    data = series.host_series(host.pk, old - timedelta(days=1))

    assert 1 < len(data["t"]) <= 10
    assert data["kv_cache_usage_pct"][-1] == 99
    assert data["t"] == sorted(data["t"])


def test_it_never_prunes_a_minute_before_it_is_rolled_up(host) -> None:  # type: ignore[no-untyped-def]
    start = _minute(days_ago=9)
    for m in range(0, 40, 3):
        _store(host, start + timedelta(minutes=m, seconds=40))

    pruned = retention.apply_retention(
        start + timedelta(days=7, minutes=30, seconds=50),
        keep_raw=timedelta(days=7),
        keep_rollups=timedelta(days=90),
        window=WINDOW,
    )

    # Minute 30 is before the cutoff but not whole yet: neither rolled up nor deleted.
    assert pruned.rolled_up == 10
    assert pruned.deleted == 10
    assert Checkpoint.objects.count() == 4


def _decoded(row: Checkpoint):  # type: ignore[no-untyped-def]
    from agent.checkpoint import decode

    return decode(json.dumps(row.data))
