"""The audit log: browsed with filters in the URL, exported as CSV and JSON, never changed."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import AsyncClient, Client

from healing import audit_log
from healing.models import AuditEntry
from tests.conftest import make_user

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _entry(minutes: float, actor: str, action: str, target: str, **detail: Any) -> AuditEntry:
    return AuditEntry.objects.create(
        at=T0 + timedelta(minutes=minutes), actor=actor, action=action, target=target,
        detail=detail,
    )  # fmt: skip


def _log() -> None:
    _entry(0, "alice", "login", "alice", ip="10.0.0.1")
    _entry(1, "alice", "proposal.approve", "proposal 7 on gpu-01")
    _entry(2, "bob", "automation.pause", "gpu-02")
    _entry(3, "anonymous", "login.failed", "=cmd|' /C calc'!A0", username="=cmd|' /C calc'!A0")
    _entry(60 * 24, "carol", "policy.update", "kv_cache_near_full", before={"hold_s": 30})


def _client(role: str = "operator") -> Client:
    client = Client()
    client.force_login(make_user(f"reader-{role}", role))
    return client


def _matches(**params: str) -> list[str]:
    f, problems = audit_log.parse_filter(params)
    assert problems == []
    return [f"{e.actor} {e.action}" for e in audit_log.search(f)]


@pytest.mark.django_db
def test_it_filters_by_actor_action_target_and_time_newest_first() -> None:
    _log()
    assert _matches(actor="ALICE") == ["alice proposal.approve", "alice login"]
    assert _matches(action="login") == ["anonymous login.failed", "alice login"]
    assert _matches(action="login.failed") == ["anonymous login.failed"]
    assert _matches(target="GPU-0") == ["bob automation.pause", "alice proposal.approve"]
    assert _matches(since="2026-03-01T12:01", until="2026-03-01T12:03") == [
        "bob automation.pause",
        "alice proposal.approve",
    ]
    assert _matches(until="2026-03-01") == _matches(since="2026-03-01", until="2026-03-01")
    assert len(_matches(until="2026-03-01")) == 4  # a date alone as `until` is that whole day
    assert _matches(since="2026-03-02T00:00:00+00:00") == ["carol policy.update"]


def test_it_says_what_is_wrong_with_a_filter() -> None:
    _, problems = audit_log.parse_filter({"since": "yesterday", "until": "2026-13-01"})
    assert problems == [
        "since='yesterday': use a date (2026-01-31) or a date and time",
        "until='2026-13-01': use a date (2026-01-31) or a date and time",
    ]
    _, problems = audit_log.parse_filter({"since": "2026-03-01", "until": "2026-03-01"})
    assert problems == []  # one whole day
    _, problems = audit_log.parse_filter({"since": "2026-03-03", "until": "2026-03-01"})
    assert problems == ["since must be before until"]


@pytest.mark.django_db
def test_it_reads_a_big_log_in_batches_without_losing_entries_that_share_a_time() -> None:
    for i in range(23):
        _entry(i // 5, "sentinel", "proposal.execute", f"proposal {i}")  # five per minute
    batched = list(audit_log.in_batches(audit_log.search(audit_log.AuditFilter()), size=4))
    assert [e.pk for e in batched] == [e.pk for e in audit_log.search(audit_log.AuditFilter())]
    assert len({e.pk for e in batched}) == 23


@pytest.mark.django_db
def test_the_page_shows_filtered_entries_a_page_at_a_time() -> None:
    for i in range(120):
        _entry(i, "sentinel", "proposal.execute", f"proposal {i} on gpu-01")
    _entry(500, "alice", "login", "alice", ip="10.0.0.1")
    client = _client()
    assert (
        "&quot;ip&quot;: &quot;10.0.0.1&quot;" in client.get("/audit/?actor=alice").content.decode()
    )
    first = client.get("/audit/", {"action": "proposal"}).content.decode()
    assert first.count("<tr>") == 51  # the header and 50 entries
    assert first.index("proposal 119 on") < first.index("proposal 118 on")
    assert "alice" not in first.split('id="audit-entries"')[1]
    assert "page 1 of 3 (120 entries)" in first
    assert "?action=proposal&amp;page=2" in first
    last = client.get("/audit/", {"action": "proposal", "page": "3"}).content.decode()
    assert last.count("<tr>") == 21 and "proposal 0 on" in last
    assert 'href="/audit/export.csv?action=proposal"' in last
    bad = client.get("/audit/", {"since": "soon"})
    assert bad.status_code == 400 and "use a date" in bad.content.decode()


@pytest.mark.django_db
def test_it_exports_the_filtered_entries_as_csv_and_json() -> None:
    _log()
    client = _client("admin")
    response = client.get("/audit/export.csv", {"until": "2026-03-01"})
    assert response.streaming and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="sentinel-audit-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["action"] for r in rows] == [
        "login.failed", "automation.pause", "proposal.approve", "login"
    ]  # fmt: skip
    assert rows[0]["at"] == "2026-03-01T12:03:00+00:00"
    # Text anyone could type at the login page is not run as a formula by a spreadsheet.
    assert rows[0]["target"] == "'=cmd|' /C calc'!A0"
    assert json.loads(rows[3]["detail"]) == {"ip": "10.0.0.1"}

    response = client.get("/audit/export.json", {"actor": "carol"})
    assert response.streaming and response["Content-Type"] == "application/json"
    (entry,) = json.loads(b"".join(response.streaming_content))
    assert entry == {
        "at": "2026-03-02T12:00:00+00:00", "actor": "carol", "action": "policy.update",
        "target": "kv_cache_near_full", "reason": "", "detail": {"before": {"hold_s": 30}},
    }  # fmt: skip
    assert client.get("/audit/export.json", {"until": "never"}).status_code == 400


@pytest.mark.django_db(transaction=True)
async def test_it_streams_an_export_under_the_async_server() -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(_log)()
    user = await sync_to_async(make_user)("reader", "operator")
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.get("/audit/export.json", {"until": "2026-03-03"})
    assert response.streaming and response.is_async
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert len(json.loads(body)) == 5


@pytest.mark.django_db
def test_no_one_can_change_or_delete_an_entry_not_even_a_superuser() -> None:
    entry = _entry(0, "alice", "login", "alice")
    root = Client()
    root.force_login(make_user("root", None, is_superuser=True, is_staff=True))
    base = "/admin/healing/auditentry/"
    assert root.get(base).status_code == 200
    page = root.get(f"{base}{entry.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert root.post(f"{base}{entry.pk}/change/", {"actor": "mallory"}).status_code == 403
    assert root.get(f"{base}{entry.pk}/delete/").status_code == 403
    assert root.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert root.get(f"{base}add/").status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    root.post(base, bulk)
    assert AuditEntry.objects.get(pk=entry.pk).actor == "alice"
    # And the product's own pages only read it.
    assert _client().post("/audit/", {"actor": "mallory"}).status_code == 405
