"""The approvals queue over HTTP and websockets: who sees what, who may decide, live updates."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.test import Client

from healing.models import AuditEntry, Pause, Proposal
from monitor import live
from monitor.models import Host
from sentinel.asgi import application
from tests.healing.test_flow import KV_FULL, poll


def _operator(user: Any) -> Any:
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    return user


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _pending_proposal() -> Proposal:
    host = Host.objects.create(name="gpu-01", agent_url="http://127.0.0.1:1", agent_token="t")
    (p,) = [p for i in range(12) for p in poll(host, 1_790_000_000.0 + 5 * i, [], **KV_FULL)]
    return p


@pytest.mark.django_db
def test_the_queue_shows_what_an_operator_needs_to_decide(alice: Any) -> None:
    p = _pending_proposal()
    page = _client(_operator(alice)).get("/approvals/").content.decode()
    for text in (
        "gpu-01",
        "kv_cache_exhausted",
        "lower_max_num_seqs",
        "max_num_seqs",
        "medium risk",
        "confidence",
        f'data-countdown="{int(p.deadline_at.timestamp())}"',
        "Approve this instead",
        "reset_prefix_cache",
        "kv_cache_usage_pct",
    ):
        assert text in page, text


@pytest.mark.django_db
def test_only_operators_may_decide_or_pause(alice: Any, bob: Any) -> None:
    p = _pending_proposal()
    viewer = _client(bob)
    assert "Viewers see the queue" in viewer.get("/approvals/").content.decode()
    assert viewer.post(f"/proposals/{p.pk}/decide", {"choice": "approve"}).status_code == 403
    assert (
        viewer.post("/pauses/", {"scope": "fleet", "hours": "1", "reason": "x"}).status_code == 403
    )
    anonymous = Client().post(f"/proposals/{p.pk}/decide", {"choice": "approve"})
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    assert Proposal.objects.get(pk=p.pk).status == "pending"


@pytest.mark.django_db
def test_a_second_decision_says_who_decided_first(alice: Any, bob: Any) -> None:
    p = _pending_proposal()
    first = _client(_operator(alice)).post(
        f"/proposals/{p.pk}/decide", {"choice": "veto", "reason": "peak hour"}
    )
    assert first.status_code == 200 and "vetoed by alice" in first.content.decode()
    second = _client(_operator(bob)).post(f"/proposals/{p.pk}/decide", {"choice": "approve"})
    assert second.status_code == 409 and "already decided by alice" in second.content.decode()
    bad = _client(alice).post(f"/proposals/{p.pk}/decide", {"choice": "maybe"})
    assert bad.status_code == 409 and "choice must be one of" in bad.content.decode()


@pytest.mark.django_db
def test_pauses_need_a_scope_a_reason_and_a_sane_duration(alice: Any) -> None:
    client = _client(_operator(alice))
    bad = client.post("/pauses/", {"scope": "", "hours": "-3", "reason": ""})
    assert bad.status_code == 400
    assert "say what to pause" in bad.content.decode() and "hours must be" in bad.content.decode()
    good = client.post("/pauses/", {"scope": "fleet", "hours": "2", "reason": "upgrade"})
    assert good.status_code == 200 and Pause.objects.get().owner == alice
    assert AuditEntry.objects.get(action="automation.pause").reason == "upgrade"
    assert "Automation paused for fleet" in client.get("/approvals/").content.decode()


def _socket(user: Any) -> WebsocketCommunicator:
    client = _client(user)
    headers = [
        (b"origin", b"http://localhost"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    return WebsocketCommunicator(application, "/ws/approvals/", headers=headers)


@pytest.mark.django_db(transaction=True)
async def test_new_and_decided_proposals_reach_every_dashboard_at_once(
    alice: Any, bob: Any
) -> None:
    await database_sync_to_async(_operator)(alice)
    operator = await database_sync_to_async(_socket)(alice)
    viewer = await database_sync_to_async(_socket)(bob)
    assert (await operator.connect())[0] and (await viewer.connect())[0]
    p = await database_sync_to_async(_pending_proposal)()
    await database_sync_to_async(live.proposals_changed)([p.pk])
    seen_by_operator = await operator.receive_from(timeout=5)
    seen_by_viewer = await viewer.receive_from(timeout=5)
    assert f'id="proposal-{p.pk}"' in seen_by_operator and "Approve</button>" in seen_by_operator
    assert f'id="proposal-{p.pk}"' in seen_by_viewer and "Approve</button>" not in seen_by_viewer
    assert 'hx-swap-oob="true"' in seen_by_operator
    await database_sync_to_async(Proposal.objects.filter(pk=p.pk).update)(status="vetoed")
    await database_sync_to_async(live.proposals_changed)([p.pk])
    assert f'id="proposal-{p.pk}"' not in await operator.receive_from(timeout=5)
    assert f'id="proposal-{p.pk}"' not in await viewer.receive_from(timeout=5)
    await operator.disconnect()
    await viewer.disconnect()


async def test_the_queue_socket_refuses_anonymous_users() -> None:
    communicator = WebsocketCommunicator(
        application, "/ws/approvals/", headers=[(b"origin", b"http://localhost")]
    )
    connected, code = await communicator.connect()
    assert not connected and code == 4401


@pytest.mark.django_db
def test_the_learner_page_shows_what_it_learnt_and_reviews_teach_it(alice: Any, bob: Any) -> None:
    from django.utils import timezone

    from healing import learner_store

    key = "kv_cache_exhausted|serving|queued"
    for _ in range(6):
        learner_store.learn(kind="outcome", context_key=key, strategy="lower_max_num_seqs",
                            at=timezone.now(), outcome="success", execution_s=80.0,
                            confidence=0.95)  # fmt: skip
    p = _pending_proposal()
    Proposal.objects.filter(pk=p.pk).update(auto=True, status="done")
    client = _client(_operator(alice))
    assert _client(bob).post(f"/proposals/{p.pk}/review", {"verdict": "agree"}).status_code == 403
    assert client.post(f"/proposals/{p.pk}/review", {"verdict": "maybe"}).status_code == 400
    assert client.post(f"/proposals/{p.pk}/review", {"verdict": "disagree"}).status_code == 200
    assert client.post(f"/proposals/{p.pk}/review", {"verdict": "agree"}).status_code == 409
    page = client.get("/learner/").content.decode()
    rule = "when kv_cache_exhausted in serving with waiting &gt; 50, lower_max_num_seqs succeeds"
    assert rule in page and "100 % (n=6)" in page
    assert "reviewed by operators: 1, agreed with: 0" in page
    assert "outcome" in page and "vetoed" in page  # label counts
    assert AuditEntry.objects.filter(action="proposal.review_disagree", actor="alice").exists()


@pytest.mark.django_db
def test_the_learner_page_lists_the_pattern_models_versions_with_their_figures(alice: Any) -> None:
    from django.utils import timezone

    from monitor.models import LearnedModel

    def card(trained_on: str, types: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {"trained_on": trained_on, "windows": 10863, "runs": 96, "training_s": 30.5,
                "horizon_s": 300.0, "types": types, "not_learned": {}, **more}  # fmt: skip

    now = timezone.now()
    LearnedModel.objects.create(
        kind="patterns", version=1, model_format=1, library_version="1.7", blob=b"",
        created_at=now - timezone.timedelta(days=1),
        card=card("simulator history (cold start)", {
            "cuda_oom": {"training_positives": 412, "held_out": {
                "precision": 0.93, "recall": 0.88, "calibration_error": 0.04, "ttf_mae_s": 41.2}},
        }),
    )  # fmt: skip
    LearnedModel.objects.create(
        kind="patterns", version=2, model_format=1, library_version="1.7", blob=b"",
        created_at=now, active=True,
        card=card("this fleet's last 7 days", {
            "kv_cache_exhausted": {"training_positives": 57, "held_out": {
                "precision": None, "recall": 0.0, "calibration_error": 0.12}},
        }, not_learned={"thermal_throttling": "seen failing 3 times, 8 needed"},
           kept_at="2026-11-28T10:15:00+00:00"),
    )  # fmt: skip

    page = _client(_operator(alice)).get("/learner/").content.decode()

    assert "<title>Learner · vLLM Sentinel</title>" in page
    assert page.count('id="pattern-models"') == 1
    section = page[page.index('id="pattern-models"') :]
    assert section.index("v2 · <strong>active</strong>") < section.index("v1 · trained")
    assert "on this fleet&#x27;s last 7 days · 10863 windows of 96 runs" in section
    assert "kept after a check of the fleet's history 2026-11-28T10:15" in section
    row = section[section.index("<td>cuda_oom</td>") :].split("</tr>")[0]
    assert [c.split(">")[-1] for c in row.split("</td>")[1:-1]] == [
        "412", "0.93", "0.88", "0.04", "41.2"]  # fmt: skip
    kv = section[section.index("<td>kv_cache_exhausted</td>") :].split("</tr>")[0]
    # A precision not measured (no alarm held out) and a time error not there are dashes.
    assert [c.split(">")[-1] for c in kv.split("</td>")[1:-1]] == ["57", "-", "0.0", "0.12", "-"]
    assert "Not learned: thermal_throttling (seen failing 3 times, 8 needed)." in section
