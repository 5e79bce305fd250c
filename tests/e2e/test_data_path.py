"""Simulator + agent + Celery worker and beat + PostgreSQL + Redis + daphne, end to end."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from django.test import Client

from monitor.models import (
    Checkpoint,
    Host,
    LifecycleTransition,
    Prediction,
    ValidationReport,
    VllmError,
)
from tests.e2e.conftest import ControlPlane

pytestmark = [pytest.mark.e2e]


def _wait_until(condition, timeout_s: float, plane: ControlPlane) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; process logs:\n{plane.logs()}")
        time.sleep(0.2)


def test_it_stores_checkpoints_from_every_host_within_a_few_polls(
    control_plane: ControlPlane,
) -> None:
    names = {host.name for host in control_plane.hosts}

    def every_host_serves_twice() -> bool:
        serving = Checkpoint.objects.filter(lifecycle_state="serving")
        counts = list(serving.values_list("host__name", flat=True))
        return all(counts.count(name) >= 2 for name in names)

    # The simulated servers first start up (about 4 s), then serve; polls come every second.
    _wait_until(every_host_serves_twice, timeout_s=30, plane=control_plane)

    for host in Host.objects.all():
        assert host.status == Host.Status.UP, host.status_reason
        assert host.last_seen_at is not None
        assert host.latest["gpu_count"] >= 1
    # The agents' own transitions arrive, each with the log line that caused it.
    triggers = dict(LifecycleTransition.objects.values_list("to_state", "trigger"))
    assert "Application startup complete." in triggers["serving"]
    assert {"loading_weights", "capturing_cuda_graphs", "serving"} <= set(triggers)
    # Each supervised start was validated first, and the report reached the control plane.
    assert ValidationReport.objects.filter(trigger="startup").count() == len(names)
    row = Checkpoint.objects.filter(lifecycle_state="serving").order_by("-id").first()
    assert row.data["vllm"]["model_name"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert row.data["vllm"]["cache"]["num_gpu_blocks"] > 0
    assert row.data["gpus"][0]["memory_total_bytes"] > 0


def test_it_pushes_each_stored_poll_to_a_logged_in_websocket(
    control_plane: ControlPlane, alice
) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    ws_url = control_plane.url.replace("http", "ws") + "/ws/fleet/"

    async def receive_two_updates() -> list[str]:
        headers = {"Cookie": cookie, "Origin": control_plane.url}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url, headers=headers) as ws,
        ):
            return [(await ws.receive(timeout=15)).data for _ in range(2)]

    messages = asyncio.run(receive_two_updates())

    ids = {f'id="host-{host.pk}"' for host in control_plane.hosts}
    for html in messages:
        assert any(i in html for i in ids)
        assert 'hx-swap-oob="true"' in html


def test_it_refuses_a_websocket_without_a_session(control_plane: ControlPlane) -> None:
    ws_url = control_plane.url.replace("http", "ws") + "/ws/fleet/"

    async def connect() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url, headers={"Origin": control_plane.url}),
        ):
            pass

    # The consumer closes before accepting, so the server refuses the handshake itself.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        asyncio.run(connect())
    assert refused.value.status == 403


@pytest.mark.fleet(hosts=1, scenario="memory_leak_oom", speed=6)
def test_it_carries_a_cuda_oom_from_vllms_log_to_the_database(control_plane: ControlPlane) -> None:
    # At 6x the leak crosses the GPU's capacity about 35 s in (3 simulated minutes), and each
    # one-second poll sees 6 simulated seconds: a window as dense as a real fleet's.
    def oom_recorded() -> bool:
        return VllmError.objects.filter(category="cuda_oom").exists() and (
            LifecycleTransition.objects.filter(to_state="failed_cuda_oom").exists()
        )

    _wait_until(oom_recorded, timeout_s=90, plane=control_plane)

    error = VllmError.objects.get(category="cuda_oom")
    assert "CUDA out of memory" in error.message
    assert error.fields["requested_bytes"] > 0
    assert "Traceback (most recent call last)" in error.traceback
    failed = LifecycleTransition.objects.get(to_state="failed_cuda_oom")
    assert "OutOfMemoryError" in failed.trigger or "CUDA out of memory" in failed.trigger
    # The worker saw it coming: a cuda_oom prediction opened before the engine died.
    predicted = Prediction.objects.filter(failure_type="cuda_oom").order_by("first_predicted_at")
    assert predicted.exists(), control_plane.logs()
    assert predicted.first().first_predicted_at < error.first_seen_at
