"""An operator in a real browser finds an incident in the history, reads its story and
charts, and acknowledges it."""

from __future__ import annotations

import time
from typing import Any

import pytest

from healing import defaults, triggers
from healing.models import GuardrailPolicy, Incident, StrategySetting
from monitor import analysis, models_cache
from monitor.models import Host
from tests.e2e.browser import chromium
from tests.e2e.conftest import ControlPlane
from tests.healing.polling import poll

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

KV_FULL = {"kv_cache_usage_pct": 99.0, "requests_waiting": 80.0, "requests_running": 200.0}


@pytest.fixture(autouse=True)
def _fresh_state(transactional_db: None) -> None:
    """The default guardrails are back (an earlier transactional test flushed the tables the
    migration filled), and this process's guardrails and analysers start clean (an earlier
    test may have left state for a host of the same name)."""
    defaults.load(GuardrailPolicy, StrategySetting)
    analysis._analyzers.clear()
    models_cache.forget()
    triggers._rails = None


@pytest.mark.fleet(hosts=1)
def test_find_read_and_acknowledge_an_incident(control_plane: ControlPlane, alice: Any) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # A host the control plane cannot reach, so only these checkpoints are its history.
    host = Host.objects.create(
        name="gpu-far", agent_url="http://127.0.0.1:9", agent_token="t", model_name="llama"
    )
    start = time.time() - 600
    for i in range(14):
        poll(host, start + 5 * i, [], **KV_FULL)
    incident = Incident.objects.get(host=host)

    with chromium() as b:
        b.get(control_plane.url + "/login/?next=/incidents/%3Ffailure_type%3Dkv_cache_exhausted")
        b.find_element(By.ID, "id_username").send_keys("alice")
        b.find_element(By.ID, "id_password").send_keys("alice-password-1")
        b.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        row = f"tr.incident-row[data-id='{incident.pk}']"
        WebDriverWait(b, 15).until(lambda b: b.find_elements(By.CSS_SELECTOR, row))
        assert (
            b.find_element(By.CSS_SELECTOR, "select[name=failure_type]").get_attribute("value")
            == "kv_cache_exhausted"
        )
        b.find_element(By.CSS_SELECTOR, f"{row} a").click()

        # The charts over the incident's window are drawn from its series.
        WebDriverWait(b, 15).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-memory .main-svg")
        )
        points = b.execute_script(
            "return document.getElementById('chart-memory').data[1].y.filter(v => v != null)"
        )
        assert len(points) == 14 and max(points) == 99.0
        timeline = b.find_element(By.ID, "timeline").text
        assert "guardrail:kv_cache_near_full" in timeline and "Proposed" in timeline

        b.find_element(By.CSS_SELECTOR, "input[name=comment]").send_keys("on it")
        b.find_element(By.CSS_SELECTOR, "#incident-actions button").click()
        # The acknowledgement posts a form and the page reloads: a state read as it goes is stale.
        WebDriverWait(b, 15, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda b: b.find_element(By.ID, "incident-state").text.startswith("acknowledged")
        )
        assert "on it" in b.find_element(By.ID, "timeline").text

    incident.refresh_from_db()
    assert incident.state == "acknowledged" and incident.acknowledged_by == alice
