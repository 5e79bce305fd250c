"""A host's agent token is a secret: no page, JSON endpoint, export or admin page shows it."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from healing.models import Incident
from monitor.models import Host
from tests.conftest import make_user
from tests.test_roles import ROUTES, route_names, url_for

pytestmark = pytest.mark.django_db
TOKEN = "tok-3f9a7c1e-never-shown-anywhere"


def _body(response: Any) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def test_no_page_or_endpoint_shows_an_agent_token() -> None:
    now = timezone.now()
    host = Host.objects.create(name="gpu-01", agent_url="http://10.0.0.1:9300",
                               agent_token=TOKEN, model_name="llama")  # fmt: skip
    incident = Incident.objects.create(host=host, failure_type="kv_cache_exhausted",
                                       title="gpu-01: KV cache exhausted", opened_at=now,
                                       updated_at=now)  # fmt: skip
    client = Client()
    client.force_login(make_user("root", "admin"))
    # An admin edit first, so the audit log has a host change in it.
    form = {"name": "gpu-01", "agent_url": "http://10.0.0.1:9300", "agent_token": "",
            "model_name": "llama2", "enabled": "on", "risk": "0", "events_seen": "0",
            "top_prediction": "{}"}  # fmt: skip
    assert client.post(f"/admin/monitor/host/{host.pk}/change/", form).status_code == 302
    samples = {"int": incident.pk, "string": host.name}
    names = route_names()
    urls = [url_for(name, samples) for name, (_, method) in ROUTES.items()
            if method == "GET" and name in names]  # fmt: skip
    base = f"/admin/monitor/host/{host.pk}"
    urls += ["/admin/monitor/host/", f"{base}/change/", f"{base}/history/", f"{base}/delete/",
             "/admin/healing/auditentry/", "/admin/monitor/host/add/"]  # fmt: skip
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert TOKEN not in _body(response), url
    assert "/audit/export.json" in urls and f"/hosts/{host.name}/series.json" in urls
