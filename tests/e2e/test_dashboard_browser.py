"""A real browser: log in, open the fleet view, and see a value change without reloading."""

from __future__ import annotations

import re

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

        # Read the row in one script: a swap between two WebDriver calls would leave a
        # reference to the replaced element.
        read_row = (
            "const row = document.getElementById(arguments[0]);"
            "return [row.dataset.storedAt || null, row.innerText,"
            " ...['td.kv', 'td.reqs', 'td.tps', 'td.gpu-mem']"
            ".map((c) => row.querySelector(c).innerText)];"
        )

        def stamp(b):  # type: ignore[no-untyped-def]
            return b.execute_script(read_row, row)[0]

        def figures(b):  # type: ignore[no-untyped-def]
            return tuple(b.execute_script(read_row, row)[2:])

        first = WebDriverWait(browser, 20).until(stamp)
        WebDriverWait(browser, 20).until(lambda b: stamp(b) not in (None, first))
        # Once the simulated server serves, its figures show, then move with each poll.
        WebDriverWait(browser, 30).until(lambda b: figures(b)[0].endswith("%"))
        shown = figures(browser)
        WebDriverWait(browser, 30).until(lambda b: figures(b) != shown)

        assert browser.execute_script("return window.__sentinelMarker") == "still here"
        assert host.name in browser.execute_script(read_row, row)[1]


def test_it_extends_the_host_charts_as_checkpoints_arrive(
    control_plane: ControlPlane, alice
) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    host = control_plane.hosts[0]
    points = "return (document.getElementById('chart-kv').data || [{x: []}])[0].x.length;"
    with chromium() as browser:
        browser.get(control_plane.url + "/login/?next=/hosts/" + host.name + "/")
        browser.find_element(By.ID, "id_username").send_keys("alice")
        browser.find_element(By.ID, "id_password").send_keys("alice-password-1")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(browser, 20).until(
            lambda b: b.find_element(By.ID, "live-status").text == "live"
        )
        browser.execute_script("window.__sentinelMarker = 'still here';")
        drawn = browser.execute_script(points)
        WebDriverWait(browser, 20).until(lambda b: b.execute_script(points) >= drawn + 2)

        assert browser.execute_script("return window.__sentinelMarker") == "still here"
        # The worker's forecast of the KV cache, drawn as a line and a band around it.
        forecast = (
            "const data = document.getElementById('chart-kv').data || [];"
            "const line = data.find((t) => t.name === 'forecast');"
            "const band = data.find((t) => t.fill === 'toself');"
            "return line && line.y.length ? [line.y, band.y] : null;"
        )
        line, band = WebDriverWait(browser, 60).until(lambda b: b.execute_script(forecast))
        upper, lower = band[: len(line)], band[len(line) :][::-1]
        assert len(line) == 10 and len(band) == 20
        assert all(lo <= v <= hi for lo, v, hi in zip(lower, line, upper, strict=True))
        # As checkpoints keep arriving, the chart still shows the forecast beyond now.
        drawn = browser.execute_script(points)
        WebDriverWait(browser, 20).until(lambda b: b.execute_script(points) > drawn)
        shown = (
            "const chart = document.getElementById('chart-kv');"
            "const line = chart.data.find((t) => t.name === 'forecast');"
            "const end = new Date(line.x[line.x.length - 1]).getTime();"
            "return new Date(chart.layout.xaxis.range[1]).getTime() >= end - 1000;"
        )
        assert browser.execute_script(shown)
        ends = browser.execute_script(
            "return [...document.querySelectorAll('#charts .chart')]"
            ".map((c) => String(c.layout.xaxis.range[1]));"
        )
        assert len(ends) == 5 and len(set(ends)) == 1  # every chart over the same span
        # And says which lines the forecasts will cross, or until when none.
        crossings = browser.find_element(By.ID, "forecast-crossings").text
        assert re.fullmatch(
            r"Lines forecast to be reached · .+: .+ (in \d+ (s|min) \(\d\d:\d\d:\d\d\)|reached)"
            r"|No line forecast to be reached before \d\d:\d\d:\d\d\.",
            crossings,
        ), crossings
        titles = browser.execute_script(
            "return [...document.querySelectorAll('#charts .chart')]"
            ".map((c) => c.layout.title.text);"
        )
        assert titles == [
            "GPU memory (GB)",
            "KV cache usage (%)",
            "Requests",
            "Throughput (tokens/s)",
            "Latency (s)",
        ]


@pytest.mark.fleet(hosts=1, scenario="nccl_hang")
def test_it_charts_the_fullest_gpu_of_a_host_of_four_with_its_memory_forecast(
    control_plane: ControlPlane, alice
) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    host = control_plane.hosts[0]  # Llama-3.1-70B on four GPUs (TP=4)
    chart = (
        "const c = document.getElementById('chart-gpu-mem');"
        "if (!c || !c.data) return null;"
        "const line = c.data.find((t) => (t.name || '').startsWith('forecast ('));"
        "const band = c.data.find((t) => t.fill === 'toself');"
        "return line ? {title: c.layout.title.text, names: c.data.map((t) => t.name),"
        " used: c.data[0].y, total: c.data[1].y, line: line.y, band: band.y} : null;"
    )
    with chromium() as browser:
        browser.get(control_plane.url + "/login/?next=/hosts/" + host.name + "/")
        browser.find_element(By.ID, "id_username").send_keys("alice")
        browser.find_element(By.ID, "id_password").send_keys("alice-password-1")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        drawn = WebDriverWait(browser, 90).until(lambda b: b.execute_script(chart))

    assert drawn["title"] == "GPU memory, the fullest GPU (GB)"
    assert drawn["names"][:2] == ["used (the fullest GPU)", "its total"]
    assert "forecast (the GPU filling first)" in drawn["names"]
    # One GPU's memory (an H100's 80 GB), not the four's 320 GB, and the forecast in its GB.
    totals = [v for v in drawn["total"] if v is not None]
    assert totals and all(70 < v < 90 for v in totals)
    used = [v for v in drawn["used"] if v is not None]
    assert used and all(0 < v <= 90 for v in used)
    assert all(0 <= v <= 90 for v in drawn["line"])
    assert len(drawn["band"]) == 2 * len(drawn["line"])
