from __future__ import annotations

import pytest

from agent.lifecycle import LifecycleState
from monitor.models import Checkpoint, Host, IngestError, LifecycleTransition
from monitor.tasks import poll_fleet, poll_hosts
from tests.monitor.conftest import AgentStandIns, add_host

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _short_timeout(settings):  # type: ignore[no-untyped-def]
    settings.POLL_TIMEOUT_S = 0.5


def _poll(*hosts: Host) -> str:
    return poll_hosts([h.pk for h in hosts])


def test_it_stores_a_checkpoint_and_keeps_the_host_current(agents: AgentStandIns) -> None:
    host = add_host("gpu-01", agents.url("good/gpu-01"))
    agents.checkpoints["gpu-01"] = {"kv_cache_usage_pct": 71.5, "requests_running": 40.0}

    summary = _poll(host)

    assert summary == "polled 1 hosts: 1 stored, 0 failed"
    row = Checkpoint.objects.get(host=host)
    assert row.data["vllm"]["kv_cache_usage_pct"] == 71.5
    assert row.lifecycle_state == "serving"
    host.refresh_from_db()
    assert host.status == Host.Status.UP
    assert host.latest["kv_cache_usage_pct"] == 71.5
    assert host.latest["requests_running"] == 40.0
    assert host.last_seen_at is not None


def test_it_marks_bad_agents_without_touching_the_good_ones(agents: AgentStandIns) -> None:
    good = add_host("gpu-01", agents.url("good/gpu-01"))
    garbage = add_host("gpu-02", agents.url("garbage"))
    invalid = add_host("gpu-03", agents.url("invalid"))
    wrong_token = add_host("gpu-04", agents.url("good/gpu-04"), token="not-the-token")
    slow = add_host("gpu-05", agents.url("slow"))
    refused = add_host("gpu-06", "http://127.0.0.1:9/")
    huge = add_host("gpu-07", agents.url("huge"))
    wrong_host = add_host("gpu-08", agents.url("good/gpu-99"))
    crashed = add_host("gpu-09", agents.url("error"))

    summary = _poll(good, garbage, invalid, wrong_token, slow, refused, huge, wrong_host, crashed)

    assert summary == "polled 9 hosts: 1 stored, 8 failed"
    assert list(Checkpoint.objects.values_list("host__name", flat=True)) == ["gpu-01"]
    expected = {
        "gpu-01": ("up", None),
        "gpu-02": ("degraded", "invalid_payload"),
        "gpu-03": ("degraded", "invalid_payload"),
        "gpu-04": ("degraded", "http_status"),
        "gpu-05": ("unreachable", "timeout"),
        "gpu-06": ("unreachable", "connection"),
        "gpu-07": ("degraded", "too_large"),
        "gpu-08": ("degraded", "wrong_host"),
        "gpu-09": ("degraded", "http_status"),
    }
    for host in Host.objects.all():
        status, kind = expected[host.name]
        assert host.status == status, host.name
        error = IngestError.objects.filter(host=host).first()
        assert (error.kind if error else None) == kind, host.name


def test_it_says_what_was_wrong_with_a_bad_payload(agents: AgentStandIns) -> None:
    invalid = add_host("gpu-03", agents.url("invalid"))
    garbage = add_host("gpu-02", agents.url("garbage"))
    wrong_token = add_host("gpu-04", agents.url("good/gpu-04"), token="nope")

    _poll(invalid, garbage, wrong_token)

    error = IngestError.objects.get(host=invalid)
    assert "Expected `int`, got `str` - at `$.seq`" in error.message
    assert '"seq": "three"' in error.payload_excerpt
    assert "<html>502 Bad Gateway</html>" in IngestError.objects.get(host=garbage).payload_excerpt
    wrong_token.refresh_from_db()
    assert "token" in wrong_token.status_reason


def test_it_records_an_error_episode_once_not_every_poll(agents: AgentStandIns) -> None:
    host = add_host("gpu-06", "http://127.0.0.1:9/")

    for _ in range(3):
        _poll(host)

    assert IngestError.objects.filter(host=host).count() == 1


def test_it_marks_a_host_that_disappears_unreachable(agents: AgentStandIns) -> None:
    host = add_host("gpu-01", agents.url("good/gpu-01"))
    _poll(host)
    agents.stop()

    _poll(host)

    host.refresh_from_db()
    assert host.status == Host.Status.UNREACHABLE
    assert "cannot connect" in host.status_reason
    assert Checkpoint.objects.filter(host=host).count() == 1
    assert host.latest["requests_running"] == 96.0  # the last known figures stay visible


def test_it_stores_lifecycle_transitions(agents: AgentStandIns) -> None:
    host = add_host("gpu-01", agents.url("good/gpu-01"))
    _poll(host)
    agents.checkpoints["gpu-01"] = {
        "lifecycle_state": LifecycleState.DEGRADED,
        "lifecycle_detail": "no tokens generated for 20 s with 12 requests running",
    }
    _poll(host)
    _poll(host)

    transitions = list(LifecycleTransition.objects.filter(host=host).order_by("at"))
    assert [(t.from_state, t.to_state) for t in transitions] == [
        ("unknown", "serving"),
        ("serving", "degraded"),
    ]
    assert transitions[1].trigger.startswith("no tokens generated")
    host.refresh_from_db()
    assert host.status == Host.Status.DEGRADED
    assert host.status_reason.startswith("no tokens generated")


def test_it_skips_a_checkpoint_it_already_has(agents: AgentStandIns) -> None:
    host = add_host("gpu-01", agents.url("good/gpu-01"))
    agents.checkpoints["gpu-01"] = {"seq": 7}

    _poll(host)
    _poll(host)

    assert Checkpoint.objects.filter(host=host).count() == 1


def test_it_polls_only_enabled_hosts_in_batches(agents: AgentStandIns, settings) -> None:  # type: ignore[no-untyped-def]
    settings.POLL_BATCH_SIZE = 2
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from sentinel.celery import app

    app.conf.task_always_eager = True
    try:
        for i in range(1, 6):
            add_host(f"gpu-0{i}", agents.url(f"good/gpu-0{i}"))
        Host.objects.filter(name="gpu-05").update(enabled=False)

        assert poll_fleet() == "4 hosts in 2 batches"
    finally:
        app.conf.task_always_eager = False

    assert Checkpoint.objects.count() == 4
    assert not Checkpoint.objects.filter(host__name="gpu-05").exists()


def test_it_asks_each_agent_only_for_events_it_has_not_stored(agents: AgentStandIns) -> None:
    host = add_host("gpu-01", agents.url("good/gpu-01"))
    agents.checkpoints["gpu-01"] = {"event_seq": 7}

    _poll(host)
    _poll(host)

    assert agents.asked_since["gpu-01"] == ["0", "7"]
