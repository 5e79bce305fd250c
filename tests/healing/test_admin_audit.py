"""Changes made in the admin are audited, before and after, with secrets masked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from healing.models import AuditEntry, StrategySetting
from monitor.models import Host
from tests.conftest import make_user

pytestmark = pytest.mark.django_db
TOKEN = "agent-token-that-must-stay-secret"
NEW_TOKEN = "the-next-agent-token-also-secret"


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(make_user("carol", "admin"))  # an admin by role: not staff, not superuser
    return client


def _host_form(**changes: str) -> dict[str, str]:
    return {"name": "gpu-01", "agent_url": "http://10.0.0.1:9300", "agent_token": TOKEN,
            "model_name": "llama", "enabled": "on", "risk": "0", "events_seen": "0",
            "top_prediction": "{}", **changes}  # fmt: skip


def _audit_text() -> str:
    return json.dumps(list(AuditEntry.objects.values()), default=str)


def test_it_audits_hosts_added_and_changed_without_their_token(admin_client: Client) -> None:
    added = admin_client.post("/admin/monitor/host/add/", _host_form())
    assert added.status_code == 302, added.content.decode()[:2000]
    host = Host.objects.get()
    assert host.agent_token == TOKEN
    entry = AuditEntry.objects.get(action="host.create")
    assert entry.actor == "carol" and entry.target == "gpu-01"
    assert entry.detail["after"]["agent_token"] == "********"

    # The change page never draws the token; left blank, it stays as it was.
    page = admin_client.get(f"/admin/monitor/host/{host.pk}/change/").content.decode()
    assert 'type="password"' in page and TOKEN not in page
    url = f"/admin/monitor/host/{host.pk}/change/"
    admin_client.post(url, _host_form(agent_token="", agent_url="http://10.0.0.2:9300"))
    host.refresh_from_db()
    assert host.agent_token == TOKEN and host.agent_url == "http://10.0.0.2:9300"
    update = AuditEntry.objects.get(action="host.update")
    assert update.detail["before"]["agent_url"] == "http://10.0.0.1:9300"
    assert update.detail["after"]["agent_url"] == "http://10.0.0.2:9300"
    assert update.detail["secrets_changed"] == []

    admin_client.post(url, _host_form(agent_token=NEW_TOKEN, agent_url="http://10.0.0.2:9300"))
    host.refresh_from_db()
    assert host.agent_token == NEW_TOKEN
    last = AuditEntry.objects.filter(action="host.update").order_by("-pk").first()
    assert last is not None and last.detail["secrets_changed"] == ["agent_token"]
    assert TOKEN not in _audit_text() and NEW_TOKEN not in _audit_text()


def test_a_new_host_needs_a_token(admin_client: Client) -> None:
    page = admin_client.post("/admin/monitor/host/add/", _host_form(agent_token=""))
    assert page.status_code == 200 and "Give the token the agent expects." in page.content.decode()
    assert not Host.objects.exists()


def test_it_audits_hosts_deleted_in_bulk(admin_client: Client) -> None:
    ids = [Host.objects.create(name=f"gpu-0{i}", agent_url="http://x:1", agent_token=TOKEN).pk
           for i in (1, 2)]  # fmt: skip
    bulk = {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    admin_client.post("/admin/monitor/host/", bulk)
    assert not Host.objects.exists()
    deleted = AuditEntry.objects.filter(action="host.delete").order_by("target")
    assert [e.target for e in deleted] == ["gpu-01", "gpu-02"]
    assert TOKEN not in _audit_text()


def test_it_audits_role_changes_and_new_passwords_without_password_hashes(
    admin_client: Client, bob: Any
) -> None:
    operators = Group.objects.get_or_create(name="operator")[0]
    form = {"username": "bob", "is_active": "on", "groups": [operators.pk],
            "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"}  # fmt: skip
    response = admin_client.post(f"/admin/auth/user/{bob.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = AuditEntry.objects.get(action="user.update", target="bob")
    assert entry.detail["before"]["groups"] == ["viewer"]
    assert entry.detail["after"]["groups"] == ["operator"]
    assert entry.detail["after"]["password"] == "********"

    new = {"password1": "a-new-long-password-9", "password2": "a-new-long-password-9"}
    changed = admin_client.post(f"/admin/auth/user/{bob.pk}/password/", new)
    assert changed.status_code == 302
    bob.refresh_from_db()
    assert bob.check_password("a-new-long-password-9")
    assert AuditEntry.objects.filter(action="user.update", target="bob").count() == 2
    text = _audit_text()
    assert bob.password not in text and "a-new-long-password-9" not in text


def test_it_audits_thresholds_changed_in_the_strategy_list(admin_client: Client) -> None:
    setting = StrategySetting.objects.order_by("strategy").first()
    assert setting is not None
    rows = StrategySetting.objects.order_by("strategy")
    form = {"form-TOTAL_FORMS": str(rows.count()), "form-INITIAL_FORMS": str(rows.count()),
            "_save": "Save"}  # fmt: skip
    for i, row in enumerate(rows):
        form[f"form-{i}-id"] = str(row.pk)
        form[f"form-{i}-threshold"] = "0.97" if row.pk == setting.pk else str(row.threshold or "")
        if row.auto_enabled:
            form[f"form-{i}-auto_enabled"] = "on"
        if row.shadow:
            form[f"form-{i}-shadow"] = "on"
    response = admin_client.post("/admin/healing/strategysetting/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = AuditEntry.objects.get(action="strategy.update")
    assert entry.detail["before"]["threshold"] == setting.threshold
    assert entry.detail["after"]["threshold"] == 0.97


def test_an_admin_lifting_a_lockout_is_audited(admin_client: Client) -> None:
    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.create(
        username="alice", ip_address="10.1.2.3", failures_since_start=5, user_agent="",
        get_data="", post_data="password=********", path_info="/login/",
    )  # fmt: skip
    page = admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert page.status_code == 302 and not AccessAttempt.objects.exists()
    entry = AuditEntry.objects.get(action="lockout.delete")
    assert entry.actor == "carol" and entry.detail["before"]["username"] == "alice"
