"""Two operators in two real browsers: a decision made in one leaves the other's queue live."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from healing import triggers
from healing.models import Proposal
from mitigations.guardrails import Firing, default_policies
from monitor.models import Host
from tests.e2e.browser import chromium
from tests.e2e.conftest import ControlPlane
from tests.factories import make_checkpoint

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def _propose() -> Proposal:
    """A KV-cache guardrail that fired on a host whose agent the control plane cannot reach
    (so no fresh checkpoint of it lapses the proposal while the operators look)."""
    host = Host.objects.create(name="gpu-far", agent_url="http://127.0.0.1:9", agent_token="t",
                               model_name="llama")  # fmt: skip
    cp = msgspec.to_builtins(make_checkpoint(host=host.name, kv_cache_usage_pct=99.0,
                                             requests_waiting=80.0, requests_running=200.0,
                                             engine_args={"max_num_seqs": 256}))  # fmt: skip
    policy = next(p for p in default_policies() if p.name == "kv_cache_near_full")
    firing = Firing(policy, host.name, time.time() - 30, time.time())
    (p,) = triggers.handle([(host, cp, [firing])], timezone.now(), lambda pk: None)
    return p


def _log_in(browser: Any, url: str, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url + "/login/?next=/approvals/")
    browser.find_element(By.ID, "id_username").send_keys(user)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def test_a_decision_leaves_every_open_queue_at_once(
    control_plane: ControlPlane, alice, bob
) -> None:  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # A live update may swap the card between finding an element and using it: find it again.
    stale = (StaleElementReferenceException,)
    operators = Group.objects.get_or_create(name="operator")[0]
    alice.groups.add(operators)
    bob.groups.add(operators)
    with chromium() as first, chromium() as second:
        _log_in(first, control_plane.url, "alice", "alice-password-1")
        _log_in(second, control_plane.url, "bob", "bob-password-1")
        for b in (first, second):
            WebDriverWait(b, 15).until(lambda b: b.find_elements(By.ID, "approvals-queue"))
            b.execute_script("window.__sentinelMarker = 'still here';")
        p = _propose()
        from monitor import live

        live.proposals_changed([p.pk])
        card = f"proposal-{p.pk}"
        for b in (first, second):  # it appears in both, live
            WebDriverWait(b, 15).until(lambda b: b.find_elements(By.ID, card))
        WebDriverWait(second, 15, ignored_exceptions=stale).until(
            lambda b: "lower_max_num_seqs" in b.find_element(By.ID, card).text
        )

        def approve(b):  # type: ignore[no-untyped-def]
            b.find_element(By.CSS_SELECTOR, f"#{card} button.approve").click()
            return True

        WebDriverWait(first, 15, ignored_exceptions=stale).until(approve)

        WebDriverWait(second, 15).until(
            lambda b: not b.find_elements(By.CSS_SELECTOR, f"article#{card}")
        )
        # It shows among the latest decisions, by alice (then executing, verifying...: the
        # worker runs it on the simulated host at once).
        read = "return (document.getElementById(arguments[0]) || {}).innerText || '';"
        WebDriverWait(second, 15).until(
            lambda b: "by alice" in b.execute_script(read, f"recent-{p.pk}")
        )
        for b in (first, second):
            assert b.execute_script("return window.__sentinelMarker") == "still here"
    p.refresh_from_db()
    assert p.decided_by == alice and p.status in ("approved", "executing", "verifying", "done",
                                                   "failed")  # fmt: skip
