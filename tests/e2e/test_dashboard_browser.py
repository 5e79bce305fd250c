"""A real browser: log in, open the fleet view, and see a value change without reloading."""

from __future__ import annotations

import pytest

from tests.e2e.browser import chromium
from tests.e2e.conftest import ControlPlane

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_it_updates_the_fleet_view_live_in_a_browser(control_plane: ControlPlane, alice) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    host = control_plane.hosts[0]
    with chromium() as browser:
        browser.get(control_plane.url + "/login/")
        browser.find_element(By.ID, "id_username").send_keys("alice")
        browser.find_element(By.ID, "id_password").send_keys("alice-password-1")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(browser, 15).until(lambda b: b.find_elements(By.ID, "fleet-rows"))
        # A marker on the window survives live swaps but not a reload.
        browser.execute_script("window.__sentinelMarker = 'still here';")
        row = f"host-{host.pk}"

        def stamp(b):  # type: ignore[no-untyped-def]
            return b.find_element(By.ID, row).get_attribute("data-stored-at")

        def figures(b):  # type: ignore[no-untyped-def]
            cells = ("td.kv", "td.reqs", "td.tps", "td.gpu-mem")
            return tuple(b.find_element(By.CSS_SELECTOR, f"#{row} {c}").text for c in cells)

        first = WebDriverWait(browser, 20).until(stamp)
        WebDriverWait(browser, 20).until(lambda b: stamp(b) not in (None, first))
        # Once the simulated server serves, its figures show, then move with each poll.
        WebDriverWait(browser, 30).until(lambda b: figures(b)[0].endswith("%"))
        shown = figures(browser)
        WebDriverWait(browser, 30).until(lambda b: figures(b) != shown)

        assert browser.execute_script("return window.__sentinelMarker") == "still here"
        assert host.name in browser.find_element(By.ID, row).text
