from __future__ import annotations

import pytest
from django.urls import reverse

from monitor.models import Host
from tests.factories import RECOVERED_HOST_STEPS, SICK_HOST_STEPS, add_transitions

pytestmark = pytest.mark.django_db


def test_it_draws_the_fleets_state_graph_with_one_hosts_place_in_it(client, alice) -> None:  # type: ignore[no-untyped-def]
    one = Host.objects.create(
        name="gpu-01", agent_url="http://x:1", agent_token="t", lifecycle_state="degraded"
    )
    two = Host.objects.create(name="gpu-02", agent_url="http://x:2", agent_token="t")
    add_transitions(one, SICK_HOST_STEPS)
    add_transitions(two, RECOVERED_HOST_STEPS)
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


def test_a_fleet_with_no_transitions_yet_gets_an_empty_graph_not_an_error(client, alice) -> None:  # type: ignore[no-untyped-def]
    Host.objects.create(name="gpu-new", agent_url="http://x:1", agent_token="t")
    client.force_login(alice)

    fleet = client.get(reverse("state_graph_json")).json()
    host = client.get(reverse("state_graph_json"), {"host": "gpu-new"}).json()

    assert fleet["nodes"] == [] and fleet["edges"] == [] and fleet["current"] is None
    # The host's state is drawn alone, with nothing learned from it.
    (node,) = host["nodes"]
    assert node["state"] == host["current"]["state"] == "unknown" and node["visits"] == 0
    assert node["paths"] == [] and node["recovery"] is None
    assert client.get(reverse("host_detail", args=["gpu-new"])).status_code == 200
    assert client.get(reverse("state_graph_json"), {"host": "no-such"}).status_code == 404
