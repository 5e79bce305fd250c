from __future__ import annotations

import time

import pytest
from django.utils import timezone

from agent.checkpoint import (
    ErrorEvent,
    GpuEvent,
    Transition,
    ValidationCheck,
    ValidationReport,
    decode,
    encode,
)
from agent.lifecycle import LifecycleState as S
from monitor import ingest, polling
from monitor.models import GpuEvent as GpuEventRow
from monitor.models import Host, LifecycleTransition, VllmError
from monitor.models import ValidationReport as ValidationRow
from tests.factories import make_checkpoint

pytestmark = pytest.mark.django_db
RUN = 1_780_000_000.0


@pytest.fixture
def host() -> Host:
    return Host.objects.create(name="gpu-01", agent_url="http://127.0.0.1:1", agent_token="t")


def _poll(host: Host, *, since: int | None = None, **changes) -> ingest.StoreReport:  # type: ignore[no-untyped-def]
    host.refresh_from_db()
    asked = host.events_seen if since is None else since
    target = polling.PollTarget(
        host_id=host.pk, name=host.name, url=host.agent_url, token="t", events_since=asked
    )
    cp = decode(
        encode(make_checkpoint(host=host.name, agent_started_at=changes.pop("run", RUN), **changes))
    )
    result = polling.PollResult(target=target, elapsed_s=0.01, checkpoint=cp)
    return ingest.store_poll_results({host.pk: host}, [result], timezone.now())


def _oom(event_id: int, at: float, count: int = 1) -> ErrorEvent:
    return ErrorEvent(
        id=event_id,
        category="cuda_oom",
        count=count,
        first_seen_at=at,
        last_seen_at=at,
        message="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        signature="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate # GiB.",
        traceback="Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: ...",
        fields={"gpu": 0, "requested_bytes": 2147483648},
    )


def test_it_stores_the_agents_transitions_with_their_trigger_and_time(host: Host) -> None:
    at = time.time() - 30
    transitions = [
        Transition(
            id=1,
            at=at,
            from_state=S.UNKNOWN,
            to_state=S.LOADING_WEIGHTS,
            trigger="Starting to load model meta-llama/Llama-3.1-8B-Instruct...",
        ),
        Transition(
            id=2,
            at=at + 9,
            from_state=S.LOADING_WEIGHTS,
            to_state=S.SERVING,
            trigger="Application startup complete.",
        ),
    ]

    report = _poll(host, transitions=transitions, event_seq=2)

    rows = list(LifecycleTransition.objects.order_by("at"))
    assert [(r.from_state, r.to_state, r.trigger) for r in rows] == [
        (
            "unknown",
            "loading_weights",
            "Starting to load model meta-llama/Llama-3.1-8B-Instruct...",
        ),
        ("loading_weights", "serving", "Application startup complete."),
    ]
    assert abs(rows[0].at.timestamp() - at) < 0.001
    assert report.hosts_with_events == {host.pk}


def test_it_stores_each_event_once_however_often_the_agent_sends_it(host: Host) -> None:
    gpu_event = GpuEvent(
        id=1,
        at=time.time(),
        gpu_index=0,
        kind="xid",
        severity="critical",
        xid=79,
        message="GPU has fallen off the bus",
        action="reboot the node",
    )

    _poll(host, gpu_events=[gpu_event], event_seq=1, since=0)
    _poll(host, gpu_events=[gpu_event], event_seq=1, since=0)  # an answer that crossed a retry

    assert GpuEventRow.objects.count() == 1
    assert Host.objects.get().events_seen == 1


def test_it_asks_for_everything_again_after_the_agent_restarts(host: Host) -> None:
    _poll(host, event_seq=40, errors=[_oom(40, time.time())])
    report = _poll(
        host,
        run=RUN + 3600,
        event_seq=2,
        since=40,
        validations=[_report(2)],
        lifecycle_state=S.SERVING,
    )
    assert ValidationRow.objects.count() == 0  # asked about the old run: wait for the next poll
    assert Host.objects.get().events_seen == 0
    assert report.hosts_with_events == set()

    _poll(host, run=RUN + 3600, event_seq=2, validations=[_report(2)])

    row = ValidationRow.objects.get()
    assert (row.status, row.blocked, row.trigger) == ("fail", True, "startup")
    assert row.checks[0]["fix_params"] == {"gpu_memory_utilization": 0.85}


def test_it_counts_repeats_of_an_error_in_one_episode(host: Host) -> None:
    now = time.time()
    _poll(host, errors=[_oom(1, now - 60, count=3)], event_seq=1)
    _poll(host, errors=[_oom(2, now - 30, count=2)], event_seq=2)
    _poll(host, errors=[_oom(3, now + 3600, count=1)], event_seq=3)  # an hour later: a new one

    episodes = list(VllmError.objects.order_by("first_seen_at"))
    assert [e.count for e in episodes] == [5, 1]
    assert episodes[0].category == "cuda_oom"
    assert episodes[0].fields == {"gpu": 0, "requested_bytes": 2147483648}
    assert abs(episodes[0].last_seen_at.timestamp() - (now - 30)) < 0.001


def test_it_derives_a_transition_from_an_agent_that_sends_none(host: Host) -> None:
    _poll(host, lifecycle_state=S.DEGRADED, lifecycle_detail="no forward progress for 20 s")
    row = LifecycleTransition.objects.get()
    assert (row.from_state, row.to_state, row.trigger) == (
        "unknown",
        "degraded",
        "no forward progress for 20 s",
    )


def _report(event_id: int) -> ValidationReport:
    return ValidationReport(
        id=event_id,
        at=time.time(),
        trigger="startup",
        blocked=True,
        checks=[
            ValidationCheck(
                name="gpu_free_memory",
                status="fail",
                message="GPU 0 has 61.0 GiB free; vLLM wants 73.3 GiB (0.92 of 79.6 GiB)",
                value="61.0 GiB",
                expected=">= 73.3 GiB",
                fix="Stop the other process on GPU 0 or lower gpu_memory_utilization to 0.85",
                fix_action="restart_with_args",
                fix_params={"gpu_memory_utilization": 0.85},
            ),
            ValidationCheck(name="shm_size", status="pass", message="/dev/shm is 64 GiB"),
        ],
    )
