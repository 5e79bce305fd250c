"""Incident history pages: the list, one incident, its exports, patterns, and what operators do
to an incident. Thin: parse, call healing.history / incidents / incident_timeline, render."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from healing import history, incidents
from healing.exports import spreadsheet_safe
from healing.incident_timeline import host_context, timeline, window
from healing.models import Incident, Proposal
from healing.roles import operator_required, viewer_required
from learning.prediction import FAILURE_TYPES
from mitigations.registry import STRATEGIES
from monitor import series

PER_PAGE = 50


@viewer_required
def incident_list(request: HttpRequest) -> HttpResponse:
    f = history.parse(request.GET)
    # Page through ids (an index-only scan, even deep in the list), then read those 50 rows.
    page = Paginator(history.incidents(f).values_list("pk", flat=True), PER_PAGE).get_page(
        request.GET.get("page")
    )
    ids = list(page.object_list)
    found = Incident.objects.select_related("host").in_bulk(ids)
    rows = [found[pk] for pk in ids if pk in found]
    hosts, ran = _member_hosts(rows), _mitigations(rows)
    for row in rows:  # what the row shows besides its own fields
        row.member_hosts, row.ran = hosts.get(row.pk, []), ran.get(row.pk, [])
    return render(
        request,
        "healing/incidents.html",
        {
            "f": f,
            "page": page,
            "rows": rows,
            "failure_types": FAILURE_TYPES,
            "strategies": sorted(STRATEGIES),
            "choices": {k: sorted(v) for k, v in history.CHOICES.items()},
            "sorts": list(history.SORTS),
            "page_query": f.query_string(),
        },
        status=400 if f.errors else 200,
    )


def _member_hosts(rows: list[Incident]) -> dict[int, list[str]]:
    """The hosts of each fleet incident on the page, in one query."""
    fleet = [r.pk for r in rows if r.is_fleet]
    found: dict[int, list[str]] = defaultdict(list)
    for parent, name in (
        Incident.objects.filter(parent_id__in=fleet)
        .order_by("host__name")
        .values_list("parent_id", "host__name")
    ):
        found[parent].append(name)
    return found


def _mitigations(rows: list[Incident]) -> dict[int, list[str]]:
    """'strategy → outcome' of what ran for each incident on the page (a fleet incident's
    hosts' included), in one query."""
    ids = {r.pk for r in rows}
    found: dict[int, list[str]] = defaultdict(list)
    # The page's incidents and their members first: an OR across the join to incidents would
    # scan every proposal.
    incidents = Incident.objects.filter(Q(pk__in=ids) | Q(parent_id__in=ids)).values("pk")
    for incident_id, parent_id, strategy, chosen, outcome, auto in (
        Proposal.objects.filter(incident_id__in=incidents, status__in=history.RAN)
        .order_by("created_at")
        .values_list("incident_id", "incident__parent_id", "strategy", "chosen_strategy",
                     "outcome", "auto")
    ):  # fmt: skip
        key = incident_id if incident_id in ids else parent_id
        found[key].append(f"{chosen or strategy} → {outcome or 'running'}" + (" (auto)" * auto))
    return found


@viewer_required
def incident_detail(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_object_or_404(Incident.objects.select_related("host", "parent"), pk=pk)
    return render(request, "healing/incident.html", _context(request, incident))


def _context(request: HttpRequest, incident: Incident, error: str = "") -> dict[str, Any]:
    start, end = window(incident)
    return {
        "incident": incident,
        "members": incident.members.select_related("host").order_by("opened_at")
        if incident.is_fleet
        else [],
        "entries": timeline(incident),
        "host": host_context(incident),
        "window_start": start,
        "window_end": end,
        "error": error,
    }


@viewer_required
def incident_series(request: HttpRequest, pk: int) -> JsonResponse:
    """The host's chart series over the incident's window (rolled up where raw is gone)."""
    incident = get_object_or_404(Incident, pk=pk, host__isnull=False)
    start, end = window(incident)
    return JsonResponse(series.host_series(incident.host_id, start, end))


@viewer_required
def incident_json(request: HttpRequest, pk: int) -> JsonResponse:
    incident = get_object_or_404(Incident.objects.select_related("host"), pk=pk)
    response = JsonResponse(
        _export(incident), encoder=DjangoJSONEncoder, json_dumps_params={"indent": 1}
    )
    response["Content-Disposition"] = f'attachment; filename="incident-{pk}.json"'
    return response


def _export(incident: Incident) -> dict[str, Any]:
    fields = ("id", "title", "failure_type", "severity", "state", "model_name", "opened_at",
              "acknowledged_at", "resolved_at", "resolution", "reopened", "first_predicted_at",
              "failed_at", "mitigated_at", "lead_time_s", "detect_s", "mitigate_s", "recover_s",
              "healed_by", "signals", "parent_id")  # fmt: skip
    data = {name: getattr(incident, name) for name in fields}
    data["host"] = incident.host.name if incident.host_id else None
    data["hosts"] = list(incident.members.values_list("host__name", flat=True))
    data["acknowledged_by"] = _username(incident.acknowledged_by)
    data["resolved_by"] = _username(incident.resolved_by)
    data["host_context"] = host_context(incident)
    data["timeline"] = [e.as_json() for e in timeline(incident)]
    return data


def _username(user: Any) -> str | None:
    return user.username if user is not None else None


@viewer_required
def incident_csv(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_object_or_404(Incident.objects.select_related("host"), pk=pk)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="incident-{pk}.csv"'
    out = csv.writer(response)
    out.writerow(["at", "kind", "host", "title", "detail", "who"])
    for e in timeline(incident):
        cells = [e.at.isoformat(), e.kind, e.host, e.title, e.detail, e.who]
        out.writerow([spreadsheet_safe(c) for c in cells])
    return response


@viewer_required
def incident_patterns(request: HttpRequest) -> HttpResponse:
    f = history.parse(request.GET)
    until = f.until or timezone.now()
    since = f.since or until - timedelta(days=30)
    return render(
        request,
        "healing/incident_patterns.html",
        {"p": history.patterns(since, until), "f": f, "since": since, "until": until},
        status=400 if f.errors else 200,
    )


@operator_required
@require_POST
def acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    comment = request.POST.get("comment", "").strip()[:2000]
    return _act(request, pk, incidents.acknowledge, comment)


@operator_required
@require_POST
def resolve(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, incidents.resolve, request.POST.get("note", "")[:1000])


@operator_required
@require_POST
def note(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, incidents.add_note, request.POST.get("text", ""))


def _act(request: HttpRequest, pk: int, do: Callable[..., Any], text: str) -> HttpResponse:
    """Do it as this operator, now; back to the incident, or its page with why not."""
    incident = get_object_or_404(Incident, pk=pk)
    try:
        do(pk, request.user, text, timezone.now())
    except incidents.IncidentError as exc:
        context = _context(request, incident, str(exc))
        return render(request, "healing/incident.html", context, status=409)
    return redirect("incident", pk=pk)
