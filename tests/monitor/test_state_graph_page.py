from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from monitor.models import Host, LifecycleTransition

pytestmark = pytest.mark.django_db


def _history(host: Host, steps: list[tuple[float, str, str]]) -> None:
    now = timezone.now()
    LifecycleTransition.objects.bulk_create(
        LifecycleTransition(host=host, at=now - timedelta(seconds=ago), from_state=a, to_state=b)
        for ago, a, b in steps
    )


def test_it_draws_the_fleets_state_graph_with_one_hosts_place_in_it(client, alice) -> None:  # type: ignore[no-untyped-def]
    one = Host.objects.create(
        name="gpu-01", agent_url="http://x:1", agent_token="t", lifecycle_state="degraded"
    )
    two = Host.objects.create(name="gpu-02", agent_url="http://x:2", agent_token="t")
    _history(one, [(900, "unknown", "serving"), (300, "serving", "degraded"),
                   (200, "degraded", "failed_cuda_oom"), (150, "failed_cuda_oom", "serving"),
                   (60, "serving", "degraded")])  # fmt: skip
    _history(two, [(900, "unknown", "serving"), (400, "serving", "degraded"),
                   (350, "degraded", "serving")])  # fmt: skip
    client.force_login(alice)

    graph = client.get(reverse("state_graph_json"), {"host": "gpu-01"}).json()

    states = {node["state"]: node for node in graph["nodes"]}
    assert {"serving", "degraded", "failed_cuda_oom"} <= set(states)
    assert graph["current"]["state"] == "degraded" and states["degraded"]["current"]
    assert 0 < states["degraded"]["risk"] <= 1
    assert states["failed_cuda_oom"]["colour"] == "failed"
    assert states["degraded"]["paths"][0]["states"] == ["degraded", "failed_cuda_oom"]
    assert states["failed_cuda_oom"]["recovery"]["states"] == ["failed_cuda_oom", "serving"]
    edge = next(
        e for e in graph["edges"] if (e["from"], e["to"]) == ("degraded", "failed_cuda_oom")
    )
    assert edge["count"] == 1 and edge["probability"] == pytest.approx(0.5)
    assert client.get(reverse("state_graph")).status_code == 200
