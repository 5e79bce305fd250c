from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from agent.checkpoint import decode, encode
from monitor import ingest, live, polling
from monitor.models import Host
from sentinel.asgi import application
from tests.factories import make_checkpoint

pytestmark = pytest.mark.django_db(transaction=True)


def _host(name: str) -> Host:
    return Host.objects.create(name=name, agent_url="http://127.0.0.1:1", agent_token="t")


def _store_and_broadcast(host: Host, **changes) -> None:  # type: ignore[no-untyped-def]
    target = polling.PollTarget(host_id=host.pk, name=host.name, url=host.agent_url, token="t")
    cp = decode(encode(make_checkpoint(host=host.name, **changes)))
    result = polling.PollResult(target=target, elapsed_s=0.01, checkpoint=cp)
    live.hosts_updated(ingest.store_poll_results({host.pk: host}, [result], timezone.now()))


def _socket(path: str, user=None) -> WebsocketCommunicator:  # type: ignore[no-untyped-def]
    """A websocket as a browser opens it: same origin, with the session cookie if logged in."""
    headers = [(b"origin", b"http://localhost")]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def test_it_refuses_a_websocket_without_login() -> None:
    for path in ("/ws/fleet/", "/ws/hosts/1/"):
        communicator = _socket(path)
        connected, code = await communicator.connect()
        assert not connected
        assert code == 4401
        await communicator.disconnect()


async def test_it_pushes_rerendered_rows_to_the_fleet_page(alice) -> None:  # type: ignore[no-untyped-def]
    host = await database_sync_to_async(_host)("gpu-01")
    communicator = await database_sync_to_async(_socket)("/ws/fleet/", alice)
    connected, _ = await communicator.connect()
    assert connected

    await database_sync_to_async(_store_and_broadcast)(host, kv_cache_usage_pct=88.5)

    html = await communicator.receive_from(timeout=5)
    assert f'id="host-{host.pk}"' in html
    assert 'hx-swap-oob="true"' in html
    assert "88.5%" in html
    await communicator.disconnect()


async def test_it_pushes_chart_points_only_to_that_hosts_page(alice) -> None:  # type: ignore[no-untyped-def]
    one = await database_sync_to_async(_host)("gpu-01")
    two = await database_sync_to_async(_host)("gpu-02")
    watching_one = await database_sync_to_async(_socket)(f"/ws/hosts/{one.pk}/", alice)
    watching_two = await database_sync_to_async(_socket)(f"/ws/hosts/{two.pk}/", alice)
    assert (await watching_one.connect())[0]
    assert (await watching_two.connect())[0]

    await database_sync_to_async(_store_and_broadcast)(one, requests_waiting=17.0)

    message = json.loads(await watching_one.receive_from(timeout=5))
    assert message["point"]["requests_waiting"] == 17.0
    assert message["stored_at"] > 0
    assert await watching_two.receive_nothing(timeout=0.5)
    await watching_one.disconnect()
    await watching_two.disconnect()


async def test_it_pushes_rerendered_event_panels_when_events_arrive(alice) -> None:  # type: ignore[no-untyped-def]
    from agent.checkpoint import ErrorEvent

    host = await database_sync_to_async(_host)("gpu-01")
    watching = await database_sync_to_async(_socket)(f"/ws/hosts/{host.pk}/", alice)
    assert (await watching.connect())[0]

    await database_sync_to_async(_store_and_broadcast)(host)  # first poll: unknown → serving
    first = json.loads(await watching.receive_from(timeout=5))
    await database_sync_to_async(_store_and_broadcast)(host)  # nothing new
    quiet = json.loads(await watching.receive_from(timeout=5))
    error = ErrorEvent(
        id=1,
        category="nccl_error",
        message="RuntimeError: NCCL error: unhandled system error",
        signature="RuntimeError: NCCL error: unhandled system error",
        count=4,
    )
    await database_sync_to_async(_store_and_broadcast)(host, errors=[error], event_seq=1)
    loud = json.loads(await watching.receive_from(timeout=5))

    assert "serving" in first["panels"]
    assert "panels" not in quiet
    assert 'id="host-events"' in loud["panels"]
    assert "nccl_error" in loud["panels"] and "\u00d74" in loud["panels"]
    await watching.disconnect()


async def test_it_pushes_the_analysis_of_a_poll_to_that_hosts_page(alice) -> None:  # type: ignore[no-untyped-def]
    from monitor.tasks import analyze_batch

    host = await database_sync_to_async(_host)("gpu-01")
    watching = await database_sync_to_async(_socket)(f"/ws/hosts/{host.pk}/", alice)
    assert (await watching.connect())[0]

    def poll_and_analyse() -> str:
        now = timezone.now()
        target = polling.PollTarget(host_id=host.pk, name=host.name, url=host.agent_url, token="t")
        cp = decode(encode(make_checkpoint(host=host.name)))
        result = polling.PollResult(target=target, elapsed_s=0.01, checkpoint=cp)
        ingest.store_poll_results({host.pk: host}, [result], now)
        return analyze_batch([host.pk], now.isoformat())

    summary = await database_sync_to_async(poll_and_analyse)()
    message = json.loads(await watching.receive_from(timeout=5))

    assert summary.startswith("analysed 1 checkpoints")
    metrics = {f["metric"] for f in message["forecasts"]}
    assert {"kv_cache_usage_pct", "gpu_mem_used_pct"} <= metrics
    assert "predictions" not in message  # nothing predicted for a healthy host
    await watching.disconnect()
