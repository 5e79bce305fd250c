"""Incidents as operators live them: one per episode, grouped across a model's hosts,
acknowledged, resolved, reopened, with their figures, history, timeline and exports."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from agent.checkpoint import Checkpoint
from healing import incidents
from healing.incident_figures import Mitigation, figures, fleet_healed_by
from healing.models import AuditEntry, Incident, IncidentNote, Proposal
from monitor.models import Host, LifecycleTransition, VllmError
from tests.healing.polling import poll

KV_FULL = {"kv_cache_usage_pct": 99.0, "requests_waiting": 80.0, "requests_running": 200.0}
T0 = datetime.now(tz=UTC).timestamp() - 6 * 3600  # in the past of the views' own clock


def _host(name: str, model: str = "llama") -> Host:
    return Host.objects.create(
        name=name, agent_url="http://127.0.0.1:1", agent_token="t", model_name=model
    )


def _kv_full(host: Host, start: float, n: int = 12) -> None:
    for i in range(n):
        poll(host, start + 5 * i, [], **KV_FULL)


def _healthy(host: Host, start: float, end: float) -> None:
    for t in range(int(start), int(end), 5):
        poll(host, t, [])


def _stalled(cp: Checkpoint) -> Checkpoint:
    assert cp.vllm is not None
    return dataclasses.replace(cp, vllm=dataclasses.replace(cp.vllm, forward_progress=False))


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def _signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# ---------------------------------------------------------------- one per episode, grouped


@pytest.mark.django_db
def test_one_failure_on_two_hosts_of_a_model_is_one_fleet_incident(bob: Any) -> None:
    a, b, other = _host("gpu-01"), _host("gpu-02"), _host("gpu-09", model="mistral")
    _kv_full(a, T0)
    _kv_full(a, T0 + 60)  # later signals of the same episode join it
    _kv_full(b, T0 + 120)
    _kv_full(other, T0 + 130)

    fleet = Incident.objects.get(host__isnull=True)
    assert sorted(fleet.members.values_list("host__name", flat=True)) == ["gpu-01", "gpu-02"]
    assert fleet.title == "kv cache exhausted on 2 hosts of llama"
    assert fleet.opened_at == Incident.objects.get(host=a).opened_at
    assert Incident.objects.filter(host=a).count() == 1
    assert Incident.objects.get(host=other).parent is None  # another model: its own

    page = _signed_in(bob).get("/incidents/")
    rows = [r.split('"')[0] for r in page.content.decode().split('data-id="')[1:]]
    assert page.status_code == 200 and sorted(rows) == sorted(
        [str(fleet.pk), str(Incident.objects.get(host=other).pk)]
    )  # two rows, not three: the fleet incident folds its hosts in
    assert "fleet: gpu-01, gpu-02" in page.content.decode()
    only_b = _signed_in(bob).get("/incidents/", {"host": "gpu-02"})
    assert [i.pk for i in only_b.context["rows"]] == [fleet.pk]


@pytest.mark.django_db
def test_hosts_failing_far_apart_are_separate_incidents() -> None:
    a, b = _host("gpu-01"), _host("gpu-02")
    _kv_full(a, T0)
    _kv_full(b, T0 + 900)  # fifteen minutes later: not the same fleet event
    assert Incident.objects.filter(host__isnull=True).count() == 0
    assert Incident.objects.filter(parent__isnull=True).count() == 2


@pytest.mark.django_db
def test_resolving_every_host_resolves_the_fleet_incident_and_resolving_it_resolves_them(
    alice: Any,
) -> None:
    a, b, c = _host("gpu-01"), _host("gpu-02"), _host("gpu-03")
    for i, h in enumerate((a, b, c)):
        _kv_full(h, T0 + 20 * i)
    fleet = Incident.objects.get(host__isnull=True)
    ia, ib = Incident.objects.get(host=a), Incident.objects.get(host=b)
    incidents.resolve(ia.pk, None, "", _at(T0 + 600), why="verified")
    incidents.resolve(ib.pk, alice, "moved traffic away", _at(T0 + 700))
    fleet.refresh_from_db()
    assert fleet.state == "open"  # gpu-03 still failing

    incidents.resolve(fleet.pk, alice, "rolled back the model config", _at(T0 + 800))
    states = dict(Incident.objects.filter(host__isnull=False).values_list("host__name", "state"))
    assert states == {"gpu-01": "resolved", "gpu-02": "resolved", "gpu-03": "resolved"}
    fleet.refresh_from_db()
    assert fleet.healed_by == "hand" and fleet.resolved_by == alice
    assert fleet.recover_s == pytest.approx(800 - 0, abs=60)


# ---------------------------------------------------------------- operators' states


@pytest.mark.django_db
def test_acknowledge_then_resolve_with_a_note_over_http(alice: Any, bob: Any) -> None:
    _kv_full(_host("gpu-01"), T0)
    incident = Incident.objects.get()
    client = _signed_in(alice)

    assert _signed_in(bob).post(f"/incidents/{incident.pk}/acknowledge").status_code == 403
    r = client.post(f"/incidents/{incident.pk}/acknowledge", {"comment": "on it"})
    assert r.status_code == 302
    incident.refresh_from_db()
    assert (incident.state, incident.acknowledged_by) == ("acknowledged", alice)
    again = client.post(f"/incidents/{incident.pk}/acknowledge", {"comment": "me too"})
    assert again.status_code == 409 and "alice acknowledged it already" in again.content.decode()

    no_note = client.post(f"/incidents/{incident.pk}/resolve", {"note": "  "})
    assert no_note.status_code == 409 and "Say in a note" in no_note.content.decode()
    client.post(f"/incidents/{incident.pk}/note", {"text": "CUDA graphs off helped a bit"})
    client.post(f"/incidents/{incident.pk}/resolve", {"note": "lowered max_num_seqs by hand"})
    incident.refresh_from_db()
    assert incident.state == "resolved" and incident.resolved_by == alice
    assert incident.resolution == "lowered max_num_seqs by hand" and incident.healed_by == "hand"
    assert list(incident.notes.values_list("kind", flat=True)) == ["acknowledge", "note", "resolve"]
    assert set(AuditEntry.objects.values_list("action", flat=True)) >= {
        "incident.acknowledge",
        "incident.note",
        "incident.resolve",
    }
    resolved_again = client.post(f"/incidents/{incident.pk}/resolve", {"note": "x"})
    assert resolved_again.status_code == 409


@pytest.mark.django_db
def test_a_failure_back_soon_after_resolving_reopens_the_incident() -> None:
    host = _host("gpu-01")
    _kv_full(host, T0)
    first = Incident.objects.get()
    incidents.resolve(first.pk, None, "", _at(T0 + 100), why="verified")
    _healthy(host, T0 + 60, T0 + 200)  # the guardrail clears

    _kv_full(host, T0 + 400)  # back within INCIDENT_REOPEN_S (900 s)
    first.refresh_from_db()
    assert Incident.objects.count() == 1
    assert (first.state, first.reopened, first.resolved_at) == ("open", 1, None)
    assert AuditEntry.objects.filter(action="incident.reopen").count() == 1

    incidents.resolve(first.pk, None, "", _at(T0 + 500), why="verified")
    _healthy(host, T0 + 460, T0 + 600)
    _kv_full(host, T0 + 500 + 1000)  # later than the window: a new episode
    assert Incident.objects.count() == 2


@pytest.mark.django_db
def test_an_incident_goes_quiet_and_resolves_by_itself(settings: Any) -> None:
    settings.INCIDENT_QUIET_S = 120
    host = _host("gpu-01")
    _kv_full(host, T0, n=8)
    for i in range(40):  # healthy again for 200 s
        poll(host, T0 + 40 + 5 * i, [])
    incident = Incident.objects.get()
    assert incident.state == "resolved" and incident.resolved_by is None
    assert incident.healed_by == "itself" and incident.recover_s is not None


# ---------------------------------------------------------------- figures


@pytest.mark.django_db
def test_figures_come_from_the_stored_checkpoints_when_it_resolves(alice: Any) -> None:
    host = _host("gpu-01")
    for i in range(12):  # requests running, no token: hangs from T0; the guardrail holds 30 s
        poll(host, T0 + 5 * i, [], edit=_stalled)
    incident = Incident.objects.get(failure_type="hang")
    resolved = incidents.resolve(incident.pk, alice, "restarted by hand", _at(T0 + 300))

    assert resolved is not None and resolved.failed_at == _at(T0)
    assert resolved.detect_s == pytest.approx((incident.opened_at - _at(T0)).total_seconds())
    assert 25 <= resolved.detect_s <= 40  # the deadlock guardrail's hold time
    assert resolved.lead_time_s is None  # nothing predicted it
    assert resolved.recover_s == pytest.approx((_at(T0 + 300) - incident.opened_at).total_seconds())


def test_lead_time_is_from_the_first_prediction_to_the_failure() -> None:
    f = figures(
        failure_type="cuda_oom",
        opened_at=1000.0,
        resolved_at=2000.0,
        failures=[("hang", 900.0), ("cuda_oom", 1150.0)],
        predicted_at=[1090.0, 1010.0],
        mitigations=[Mitigation(1100.0, "no_effect", True), Mitigation(1200.0, "success", False)],
        resolved_by_person=False,
    )
    assert (f.failed_at, f.first_predicted_at, f.lead_time_s) == (1150.0, 1010.0, 140.0)
    assert (f.detect_s, f.mitigate_s, f.recover_s) == (0.0, 100.0, 1000.0)
    assert f.healed_by == "approval"  # the first that worked was approved by an operator


def test_a_failure_before_the_incident_counts_and_late_predictions_give_no_lead() -> None:
    f = figures(
        failure_type="engine_dead",
        opened_at=1000.0,
        resolved_at=1500.0,
        failures=[("engine_dead", 970.0), ("engine_dead", -5000.0)],
        predicted_at=[990.0],
        mitigations=[Mitigation(None, "", True)],  # approved, never ran
        resolved_by_person=True,
    )
    assert f.failed_at == 970.0 and f.detect_s == 30.0 and f.lead_time_s is None
    assert f.mitigated_at is None and f.mitigate_s is None and f.healed_by == "hand"


def test_how_a_fleet_incident_was_healed() -> None:
    assert fleet_healed_by(["automatic", "automatic"]) == "automatic"
    assert fleet_healed_by(["automatic", "approval"]) == "approval"
    assert fleet_healed_by(["approval", "hand", "automatic"]) == "hand"


# ---------------------------------------------------------------- history browser


def _incident(host: Host | None, failure: str, at: float, **fields: Any) -> Incident:
    return Incident.objects.create(
        host=host,
        model_name=host.model_name if host else "llama",
        failure_type=failure,
        title=f"{failure} on {host.name if host else 'fleet'}",
        opened_at=_at(at),
        updated_at=_at(at),
        **fields,
    )


def _ran(incident: Incident, strategy: str, outcome: str, by: Any = None) -> Proposal:
    return Proposal.objects.create(
        incident=incident,
        host=incident.host,
        trigger="guardrail:x",
        strategy=strategy,
        risk="medium",
        confidence=0.5,
        context_key="k",
        status="done",
        outcome=outcome,
        created_at=incident.opened_at,
        deadline_at=incident.opened_at,
        decided_by=by,
        decided_at=incident.opened_at,
        auto=by is None,
    )


@pytest.fixture
def history(alice: Any) -> dict[str, Incident]:
    a, b = _host("gpu-01"), _host("gpu-02", model="mistral")
    made = {
        "oom": _incident(
            a,
            "cuda_oom",
            T0,
            severity="critical",
            state="resolved",
            recover_s=300.0,
            healed_by="automatic",
            detect_s=0.0,
        ),
        "hang": _incident(
            b,
            "hang",
            T0 + 3600,
            state="resolved",
            recover_s=900.0,
            healed_by="approval",
            detect_s=60.0,
        ),
        "kv": _incident(a, "kv_cache_exhausted", T0 + 7200),
    }
    _ran(made["oom"], "lower_gpu_memory_utilization", "success")
    _ran(made["hang"], "restart_failed_workers", "success", by=alice)
    IncidentNote.objects.create(
        incident=made["kv"], author=alice, at=_at(T0 + 7300), text="NCCL watchdog timeout on rank 3"
    )
    for incident in made.values():
        incidents.reindex(incident.pk)
    return made


def _listed(client: Client, **params: str) -> list[str]:
    response = client.get("/incidents/", params)
    assert response.status_code == 200, response.content.decode()[:500]
    return [i.failure_type for i in response.context["rows"]]


@pytest.mark.django_db
def test_the_list_filters_sorts_and_pages(history: dict[str, Incident], bob: Any) -> None:
    c = _signed_in(bob)
    assert _listed(c) == ["kv_cache_exhausted", "hang", "cuda_oom"]
    assert _listed(c, sort="oldest") == ["cuda_oom", "hang", "kv_cache_exhausted"]
    assert _listed(c, sort="longest")[:2] == ["hang", "cuda_oom"]
    assert _listed(c, host="gpu-01") == ["kv_cache_exhausted", "cuda_oom"]
    assert _listed(c, model="mistral") == ["hang"]
    assert _listed(c, severity="critical") == ["cuda_oom"]
    assert _listed(c, state="open") == ["kv_cache_exhausted"]
    assert _listed(c, healed="approval") == ["hang"]
    assert _listed(c, strategy="restart_failed_workers") == ["hang"]
    assert _listed(c, outcome="success", decided_by="alice") == ["hang"]
    assert _listed(c, q="nccl watchdog") == ["kv_cache_exhausted"]  # a note's words
    assert _listed(c, q="oom") == ["cuda_oom"]  # cuda_oom is the words cuda and oom
    assert _listed(c, q="watchdog -nccl") == []
    assert _listed(c, q="watch") == []  # whole words, not parts of them
    since = _at(T0 + 1800).strftime("%Y-%m-%dT%H:%M")
    until = _at(T0 + 5400).strftime("%Y-%m-%dT%H:%M")
    assert _listed(c, **{"from": since, "to": until}) == ["hang"]

    page = c.get("/incidents/", {"host": "gpu-01", "sort": "oldest"})
    assert "host=gpu-01&amp;sort=oldest" in page.content.decode()  # the links keep the filters


@pytest.mark.django_db
def test_the_list_pages_through_many(bob: Any) -> None:
    host = _host("gpu-01")
    for i in range(120):
        _incident(host, "hang", T0 + i, state="resolved")
    c = _signed_in(bob)
    first, third = c.get("/incidents/"), c.get("/incidents/", {"page": "3"})
    assert len(first.context["rows"]) == 50 and len(third.context["rows"]) == 20
    assert first.context["rows"][0].opened_at == _at(T0 + 119)
    assert third.context["rows"][-1].opened_at == _at(T0)


@pytest.mark.django_db
def test_bad_filters_say_what_was_wrong_and_keep_the_rest(
    history: dict[str, Incident], bob: Any
) -> None:
    r = _signed_in(bob).get(
        "/incidents/", {"state": "exploded", "from": "yesterday-ish", "host": "gpu-02"}
    )
    text = r.content.decode()
    assert r.status_code == 400
    assert "state &#x27;exploded&#x27; is not one of acknowledged, open, resolved" in text
    assert "from &#x27;yesterday-ish&#x27; is not a time" in text
    assert [i.failure_type for i in r.context["rows"]] == ["hang"]  # host still applied


# ---------------------------------------------------------------- incident page and exports


@pytest.mark.django_db
def test_the_incident_page_tells_the_whole_story_and_exports_it(alice: Any, bob: Any) -> None:
    host = _host("gpu-01")
    _kv_full(host, T0)
    incident = Incident.objects.get()
    p = Proposal.objects.get()
    client = _signed_in(alice)
    client.post(f"/proposals/{p.pk}/decide", {"choice": "veto", "reason": "not at peak"})
    LifecycleTransition.objects.create(
        host=host,
        at=_at(T0 + 20),
        from_state="serving",
        to_state="degraded",
        trigger="KV cache full",
    )
    VllmError.objects.create(
        host=host,
        category="cuda_oom",
        message="torch.OutOfMemoryError: CUDA out of memory",
        signature="s",
        first_seen_at=_at(T0 + 30),
        last_seen_at=_at(T0 + 30),
    )
    client.post(f"/incidents/{incident.pk}/note", {"text": "watching it"})

    page = _signed_in(bob).get(f"/incidents/{incident.pk}/")
    assert page.status_code == 200
    kinds = [e.kind for e in page.context["entries"]]
    for kind in ("opened", "signal", "proposal", "decision", "lifecycle", "error", "note"):
        assert kind in kinds, kind
    assert kinds.index("opened") < kinds.index("decision")
    text = page.content.decode()
    assert "not at peak" in text and "serving → degraded" in text and "alice" in text
    assert "NVIDIA H100 80GB HBM3" in text  # the host as it was: GPUs, engine args
    assert "max_num_seqs" in text
    assert "incident-actions" not in text  # bob looks, does not act

    exported = _signed_in(bob).get(f"/incidents/{incident.pk}.json").json()
    assert exported["host"] == "gpu-01" and exported["failure_type"] == "kv_cache_exhausted"
    assert [e["kind"] for e in exported["timeline"]] == kinds
    rows = list(
        csv.reader(
            io.StringIO(_signed_in(bob).get(f"/incidents/{incident.pk}.csv").content.decode())
        )
    )
    assert rows[0] == ["at", "kind", "host", "title", "detail", "who"]
    assert [r[1] for r in rows[1:]] == kinds

    series = _signed_in(bob).get(f"/incidents/{incident.pk}/series.json").json()
    assert len(series["t"]) == 12 and max(series["kv_cache_usage_pct"]) == 99.0


@pytest.mark.django_db
def test_patterns_count_what_failed_and_how_it_healed(
    history: dict[str, Incident], bob: Any
) -> None:
    r = _signed_in(bob).get("/incidents/patterns/", {"from": "7d"})
    p = r.context["p"]
    assert r.status_code == 200 and p["incidents"] == 3
    assert p["totals"]["mttr"] == pytest.approx(600.0) and p["totals"]["mttd"] == 30.0
    assert p["share_automatic"] == 0.5
    assert p["worst_hosts"][0]["host__name"] == "gpu-01" and p["worst_hosts"][0]["n"] == 2
    assert {(r["model_name"], r["failure_type"]) for r in p["by_model"]} == {
        ("llama", "cuda_oom"),
        ("mistral", "hang"),
        ("llama", "kv_cache_exhausted"),
    }
    assert "50 %" in r.content.decode()


@pytest.mark.django_db
def test_time_bounds_exclude_old_incidents_from_patterns(bob: Any) -> None:
    _incident(_host("gpu-01"), "hang", T0 - 40 * 86400)
    r = _signed_in(bob).get("/incidents/patterns/")  # the last 30 days by default
    assert r.context["p"]["incidents"] == 0


def test_ages_and_dates_in_filters() -> None:
    from healing.history import parse

    f = parse({"from": "12h", "to": "2026-11-20"})
    assert not f.errors and f.until == datetime(2026, 11, 20, tzinfo=UTC)
    assert f.since is not None and abs(
        (datetime.now(tz=UTC) - f.since) - timedelta(hours=12)
    ) < timedelta(seconds=5)


@pytest.mark.django_db
def test_the_csv_export_does_not_hand_a_spreadsheet_a_formula(alice: Any) -> None:
    _kv_full(_host("gpu-01"), T0)
    incident = Incident.objects.get()
    client = _signed_in(alice)
    client.post(f"/incidents/{incident.pk}/note", {"text": '=HYPERLINK("http://x")'})
    rows = list(
        csv.reader(io.StringIO(client.get(f"/incidents/{incident.pk}.csv").content.decode()))
    )
    assert [r[3] for r in rows if r[1] == "note"] == ['\'=HYPERLINK("http://x")']
