"""The approvals queue, decisions and pauses. Thin: parse, call a function, render."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from healing import audit, decisions, learner_store, queue, roles
from healing import tasks as healing_tasks
from healing.models import Label, Pause, Proposal
from healing.roles import operator_required, viewer_required
from monitor import live
from monitor.models import LearnedModel

MAX_PAUSE_H = 24 * 7


@viewer_required
def approvals(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    return render(
        request,
        "healing/approvals.html",
        {
            "pending": queue.pending(),
            "recent": queue.recent(),
            "shadow": queue.shadow_record(),
            "pauses": queue.pauses(now),
            "can_decide": roles.is_operator(request.user),
        },
    )


@operator_required
@require_POST
def decide(request: HttpRequest, proposal_id: int) -> HttpResponse:
    get_object_or_404(Proposal, pk=proposal_id)
    try:
        p = decisions.decide(
            proposal_id,
            request.user,
            request.POST.get("choice", ""),
            strategy=request.POST.get("strategy", ""),
            reason=request.POST.get("reason", ""),
            enqueue=healing_tasks.enqueue_execution,
        )
    except decisions.DecisionError as exc:
        return render(
            request,
            "healing/_decision_error.html",
            {"message": str(exc), "proposal_id": proposal_id},
            status=409,
        )
    live.proposals_changed([p.pk])
    return render(request, "healing/_decided.html", {"p": p})


@operator_required
@require_POST
def pause(request: HttpRequest) -> HttpResponse:
    scope = (request.POST.get("scope") or "").strip()
    reason = (request.POST.get("reason") or "").strip()
    try:
        hours = float(request.POST.get("hours") or "")
    except ValueError:
        hours = -1.0
    problems = []
    if not scope:
        problems.append("say what to pause: 'fleet' or a host name")
    if not reason:
        problems.append("give a reason")
    if not 0 < hours <= MAX_PAUSE_H:
        problems.append(f"hours must be a number above 0 and at most {MAX_PAUSE_H}")
    if problems:
        return HttpResponse("; ".join(problems), status=400)
    now = timezone.now()
    p = Pause.objects.create(
        scope=scope,
        reason=reason[:500],
        owner=request.user,
        created_at=now,
        until=now + timedelta(hours=hours),
    )
    audit.record(request.user, "automation.pause", scope, reason, until=p.until.isoformat())
    live.proposals_changed([])
    return HttpResponse(f"Paused {scope} until {timezone.localtime(p.until):%Y-%m-%d %H:%M}.")


@operator_required
@require_POST
def end_pause(request: HttpRequest, pause_id: int) -> HttpResponse:
    p = get_object_or_404(Pause, pk=pause_id)
    now = timezone.now()
    if p.until > now:
        Pause.objects.filter(pk=p.pk).update(until=now)
        audit.record(request.user, "automation.resume", p.scope, f"ended the pause: {p.reason}")
    live.proposals_changed([])
    return HttpResponse(f"Automation resumed for {p.scope}.")


PATTERN_VERSIONS = 10  # the failure pattern model's newest versions on the learner page
HELD_OUT_FIGURES = ("precision", "recall", "calibration_error", "ttf_mae_s")


def _pattern_versions() -> list[dict[str, Any]]:
    """The pattern model's newest versions, each with its card and a row of held-out figures
    per failure type ("-" where one was not measured)."""
    versions = []
    for m in LearnedModel.objects.filter(kind="patterns").defer("blob")[:PATTERN_VERSIONS]:
        rows = []
        for failure_type, figures in (m.card.get("types") or {}).items():
            held = figures.get("held_out") or {}
            rows.append([failure_type, figures.get("training_positives"),
                         *(_or_dash(held.get(k)) for k in HELD_OUT_FIGURES)])  # fmt: skip
        versions.append({"row": m, "card": m.card, "types": rows})
    return versions


def _or_dash(value: Any) -> Any:
    return "-" if value is None else value


@viewer_required
def learner(request: HttpRequest) -> HttpResponse:
    system = learner_store.learner()
    contexts = []
    for key, by_strategy in sorted(system.tallies.items()):
        if key.count("|") != 2:
            continue
        rows = sorted(by_strategy.items(), key=lambda kv: -(kv[1].success_rate or 0))
        contexts.append({"key": key.replace("|", " · "), "rows": rows})
    agreed, reviewed = system.auto_agreement
    return render(request, "healing/learner.html", {
        "contexts": contexts, "rules": system.rules(), "calibration": system.reliability(),
        "labels": Label.objects.values_list("kind").annotate(n=Count("pk")).order_by("kind"),
        "labels_seen": system.labels_seen, "agreed": agreed, "reviewed": reviewed,
        "auto": Proposal.objects.filter(auto=True).count(),
        "overall": sorted(system.performance().items()),
        "pattern_models": _pattern_versions(),
    })  # fmt: skip


@operator_required
@require_POST
def review(request: HttpRequest, proposal_id: int) -> HttpResponse:
    """An operator's verdict on an automatic decision: agreeing or not teaches the learner."""
    p = get_object_or_404(Proposal, pk=proposal_id)
    verdict = request.POST.get("verdict")
    if not p.auto or verdict not in ("agree", "disagree"):
        return HttpResponse("Review an automatic decision with verdict agree or disagree.",
                            status=400)  # fmt: skip
    if Label.objects.filter(proposal=p, auto_agreed__isnull=False).exists():
        return HttpResponse("This automatic decision was already reviewed.", status=409)
    agreed = verdict == "agree"
    learner_store.learn(kind="approved" if agreed else "vetoed", context_key=p.context_key,
                        strategy=p.strategy, at=timezone.now(), confidence=p.confidence,
                        auto_agreed=agreed, metrics=p.metrics_before, proposal=p)  # fmt: skip
    audit.record(request.user, f"proposal.review_{verdict}", f"proposal {p.pk} on {p.host.name}",
                 request.POST.get("reason", ""), strategy=p.strategy)  # fmt: skip
    return HttpResponse(f"Recorded: you {verdict} with the automatic {p.strategy}.")
