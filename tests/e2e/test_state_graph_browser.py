"""An operator in a real browser sees where a host stands in the fleet's lifecycle graph: its
state ringed, the risk from there, the likeliest way to a failure and the best way back."""

from __future__ import annotations

import re
from typing import Any

import pytest

from monitor.models import Host
from tests.e2e.browser import chromium
from tests.e2e.conftest import ControlPlane
from tests.factories import RECOVERED_HOST_STEPS, SICK_HOST_STEPS, add_transitions

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

RINGED = (
    "const data = document.getElementById(arguments[0]).data || [];"
    "const nodes = data.find((t) => t.mode === 'markers+text');"
    "if (!nodes) return null;"
    "const arrows = document.getElementById(arguments[0]).layout.annotations.length;"
    "return [nodes.text.filter((_, i) => nodes.marker.line.width[i] === 4), arrows];"
)


@pytest.mark.fleet(hosts=1)
def test_the_host_page_rings_its_state_and_says_its_ways_out(
    control_plane: ControlPlane, alice: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # Hosts the control plane cannot reach, so these transitions are all they have.
    sick = Host.objects.create(name="gpu-sick", agent_url="http://127.0.0.1:9", agent_token="t",
                               lifecycle_state="degraded")  # fmt: skip
    other = Host.objects.create(name="gpu-other", agent_url="http://127.0.0.1:9", agent_token="t")
    add_transitions(sick, SICK_HOST_STEPS)
    add_transitions(other, RECOVERED_HOST_STEPS)

    with chromium() as b:
        b.get(control_plane.url + "/login/?next=/hosts/gpu-sick/")
        b.find_element(By.ID, "id_username").send_keys("alice")
        b.find_element(By.ID, "id_password").send_keys("alice-password-1")
        b.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        drawn = WebDriverWait(b, 20).until(lambda b: b.execute_script(RINGED, "host-graph"))
        ringed, arrows = drawn
        assert ringed == ["degraded"]
        # An arrow per transition between two states: the five above, and the fleet's own
        # host's start-up as it goes.
        assert arrows >= 5
        summary = b.find_element(By.ID, "host-graph-summary").text
        assert re.match(r"degraded for \d+ s · \d+ % chance of a failure within 5 min · ", summary)
        assert "likeliest: degraded → failed_cuda_oom (" in summary
        assert "way back: degraded → serving, " in summary

        # The fleet's page lists the failed state too, with its way back to serving.
        b.get(control_plane.url + "/graph/")
        WebDriverWait(b, 20).until(lambda b: b.execute_script(RINGED, "fleet-graph"))
        rows = WebDriverWait(b, 10).until(
            lambda b: [r.text for r in b.find_elements(By.CSS_SELECTOR, "#risk-table tr")]
        )
        failed = next(r for r in rows if r.startswith("failed_cuda_oom"))
        assert "failed" in failed.split("failed_cuda_oom", 1)[1]
        assert "failed_cuda_oom → serving (" in failed
