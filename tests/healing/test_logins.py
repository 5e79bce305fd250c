"""Logins in the audit log, and the lockout after too many failures."""

from __future__ import annotations

import json
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.test import Client

from healing.models import AuditEntry

pytestmark = pytest.mark.django_db
WRONG = "hunter2-not-it"


def _log_in(username: str, password: str, ip: str = "10.1.2.3") -> Any:
    return Client(REMOTE_ADDR=ip).post("/login/", {"username": username, "password": password})


def _everything_stored() -> str:
    entries = AuditEntry.objects.values("actor", "action", "target", "reason", "detail")
    attempts = AccessAttempt.objects.values("username", "get_data", "post_data")
    return json.dumps([*entries, *attempts], default=str)


def test_it_audits_a_login_and_a_logout_with_the_address(alice: Any) -> None:
    client = Client(REMOTE_ADDR="10.1.2.3")
    response = client.post("/login/", {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 302 and response["Location"] == "/"
    client.post("/logout/")
    login, logout = AuditEntry.objects.order_by("at", "pk")
    assert (login.actor, login.action, login.target, login.detail) == (
        "alice", "login", "alice", {"ip": "10.1.2.3"}
    )  # fmt: skip
    assert (logout.actor, logout.action, logout.detail) == ("alice", "logout", {"ip": "10.1.2.3"})


def test_a_failed_login_keeps_the_username_tried_never_the_password(alice: Any) -> None:
    response = _log_in("alice", WRONG)
    assert response.status_code == 200 and "didn't match" in response.content.decode()
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.target) == ("anonymous", "login.failed", "alice")
    assert entry.detail == {"username": "alice", "ip": "10.1.2.3", "locked": False}
    assert WRONG not in _everything_stored()


def test_it_locks_out_a_username_at_one_address_after_five_failures(alice: Any) -> None:
    for _ in range(4):
        assert _log_in("alice", WRONG).status_code == 200
    locked = _log_in("alice", WRONG)
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "After 5 failed attempts" in page and "locked for 15 minutes" in page
    # Even the right password is refused now, from that address.
    again = _log_in("alice", "alice-password-1")
    assert again.status_code == 429 and "_auth_user_id" not in again.client.session
    (lockout,) = AuditEntry.objects.filter(action="login.lockout")[:1]
    assert lockout.target == "alice" and lockout.detail["ip"] == "10.1.2.3"
    assert AuditEntry.objects.filter(action="login.failed", detail__locked=True).exists()
    assert not AuditEntry.objects.filter(action="login").exists()
    # Another address is not locked out: colleagues behind another proxy can still sign in.
    assert _log_in("alice", "alice-password-1", ip="10.9.9.9").status_code == 302
    assert WRONG not in _everything_stored()
