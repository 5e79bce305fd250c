"""The approvals queue, decisions and pauses. Thin: parse, call a function, render."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from healing import audit, decisions, queue, roles
from healing import tasks as healing_tasks
from healing.models import Pause, Proposal
from monitor import live

MAX_PAUSE_H = 24 * 7


@login_required
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


@login_required
@require_POST
def decide(request: HttpRequest, proposal_id: int) -> HttpResponse:
    if not roles.is_operator(request.user):
        return HttpResponse("Only operators may decide on proposals.", status=403)
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


@login_required
@require_POST
def pause(request: HttpRequest) -> HttpResponse:
    if not roles.is_operator(request.user):
        return HttpResponse("Only operators may pause automation.", status=403)
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


@login_required
@require_POST
def end_pause(request: HttpRequest, pause_id: int) -> HttpResponse:
    if not roles.is_operator(request.user):
        return HttpResponse("Only operators may end a pause.", status=403)
    p = get_object_or_404(Pause, pk=pause_id)
    now = timezone.now()
    if p.until > now:
        Pause.objects.filter(pk=p.pk).update(until=now)
        audit.record(request.user, "automation.resume", p.scope, f"ended the pause: {p.reason}")
    live.proposals_changed([])
    return HttpResponse(f"Automation resumed for {p.scope}.")
