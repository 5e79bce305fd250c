from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from monitor.models import Host

pytestmark = pytest.mark.django_db


def _manifest(tmp_path, payload) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "fleet.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def test_it_registers_every_host_of_a_manifest_and_updates_on_rerun(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hosts = [
        {"name": "gpu-01", "agent_url": "http://127.0.0.1:9101", "token": "a", "model": "llama"},
        {"name": "gpu-02", "agent_url": "http://127.0.0.1:9103", "token": "b", "model": "llama"},
    ]
    call_command("register_fleet", _manifest(tmp_path, {"hosts": hosts}))
    hosts[0]["agent_url"] = "http://10.0.0.5:9300"
    call_command("register_fleet", _manifest(tmp_path, {"hosts": hosts}))

    assert list(Host.objects.values_list("name", "agent_url", "model_name")) == [
        ("gpu-01", "http://10.0.0.5:9300", "llama"),
        ("gpu-02", "http://127.0.0.1:9103", "llama"),
    ]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("not json", "not a fleet manifest"),
        ({"servers": []}, "not a fleet manifest"),
        ({"hosts": {"gpu-01": {}}}, "'hosts' must be a list"),
        ({"hosts": [{"name": "gpu-01"}]}, "needs name, agent_url and token"),
        (
            {"hosts": [{"name": "gpu-01", "agent_url": "ftp://x", "token": "t"}]},
            "is not an http(s) URL",
        ),
        ({"hosts": [{"name": "gpu-01", "agent_url": "http://x:1", "token": ""}]}, "token is empty"),
    ],
)
def test_it_refuses_a_bad_manifest_and_registers_nothing(tmp_path, payload, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("register_fleet", _manifest(tmp_path, payload))
    assert not Host.objects.exists()


def test_it_registers_one_host_with_a_token_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    call_command("register_host", "gpu-07", "http://10.0.0.7:9300", "--token-file", str(token))
    assert Host.objects.get(name="gpu-07").agent_token == "secret-token"


def test_it_audits_registrations_that_change_a_host_without_its_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from healing.models import AuditEntry

    token = "registered-token-kept-secret"
    hosts = [{"name": "gpu-01", "agent_url": "http://127.0.0.1:9101", "token": token}]
    call_command("register_fleet", _manifest(tmp_path, {"hosts": hosts}))
    call_command("register_fleet", _manifest(tmp_path, {"hosts": hosts}))  # no change
    hosts[0]["token"] = "a-new-" + token
    call_command("register_fleet", _manifest(tmp_path, {"hosts": hosts}))

    created, updated = AuditEntry.objects.order_by("pk")
    assert (created.actor, created.action, created.target) == ("sentinel", "host.create", "gpu-01")
    assert created.detail["after"]["agent_token"] == "********"
    assert updated.action == "host.update"
    assert updated.detail["secrets_changed"] == ["agent_token"]
    assert token not in json.dumps(list(AuditEntry.objects.values("detail", "reason")))


def test_a_bad_manifest_entry_is_reported_without_its_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hosts = [{"name": "gpu-01", "token": "never-printed-token"}]
    with pytest.raises(CommandError) as raised:
        call_command("register_fleet", _manifest(tmp_path, {"hosts": hosts}))
    assert "needs name, agent_url and token" in str(raised.value)
    assert "never-printed-token" not in str(raised.value)
