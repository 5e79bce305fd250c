"""Failing polls are logged and recorded without the agent token that went with them."""

from __future__ import annotations

import logging

import pytest

from monitor import polling
from monitor.models import Host, IngestError
from monitor.tasks import poll_hosts
from tests.monitor.conftest import TOKEN, AgentStandIns, add_host

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _short_timeout(settings):  # type: ignore[no-untyped-def]
    settings.POLL_TIMEOUT_S = 0.3


def test_failing_polls_never_log_or_record_the_token(
    agents: AgentStandIns, caplog: pytest.LogCaptureFixture
) -> None:
    agents.slow_s = 1.0
    hosts = [
        add_host("gpu-01", agents.url("good/gpu-01"), token="wrong-" + TOKEN),  # 401
        add_host("gpu-02", agents.url("error"), token=TOKEN),
        add_host("gpu-03", agents.url("slow"), token=TOKEN),
        add_host("gpu-04", "http://127.0.0.1:9/", token=TOKEN),
        add_host("gpu-05", agents.url("garbage"), token=TOKEN),
    ]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("monitor").info(
            "polling %s",
            [polling.PollTarget(host_id=1, name="gpu-01", url="http://x", token=TOKEN)],
        )  # a target's repr, too
        assert poll_hosts([h.pk for h in hosts]).endswith("0 stored, 5 failed")
    assert caplog.records and TOKEN not in caplog.text
    recorded = [*IngestError.objects.values_list("message", "payload_excerpt"),
                *Host.objects.values_list("status_reason", "name")]  # fmt: skip
    assert recorded and all(TOKEN not in text for row in recorded for text in row)
