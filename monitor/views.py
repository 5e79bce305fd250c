from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from healing.roles import viewer_required
from learning.prediction import DEFAULT_HORIZON_S as HORIZON_S
from monitor import graph_view, panels, predictions_panel, series
from monitor.models import Host

# Past the raw retention (7 days by default) the charts draw 1-minute rollups.
WINDOWS_S = {
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 24 * 3600,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
    "90d": 90 * 86400,
}
DEFAULT_WINDOW = "15m"


@viewer_required
def fleet(request: HttpRequest) -> HttpResponse:
    hosts = Host.objects.order_by("-risk", "name")
    return render(request, "monitor/fleet.html", {"hosts": hosts})


@viewer_required
def host_detail(request: HttpRequest, name: str) -> HttpResponse:
    host = get_object_or_404(Host, name=name)
    context = {
        **panels.host_events_context(host, timezone.now()),
        **predictions_panel.predictions_context(host),
        "windows": list(WINDOWS_S),
        "window": _window(request),
        "ingest_errors": host.ingest_errors.all()[:10],
    }
    return render(request, "monitor/host_detail.html", context)


@viewer_required
def host_series(request: HttpRequest, name: str) -> JsonResponse:
    host = get_object_or_404(Host, name=name)
    window = _window(request)
    since = timezone.now() - timedelta(seconds=WINDOWS_S[window])
    forecasts = [
        {"metric": f.metric, "times": f.times, "values": f.values, "lower": f.lower,
         "upper": f.upper, "crossings": f.crossings}
        for f in host.forecasts.all()
    ]  # fmt: skip
    return JsonResponse(
        {"host": host.name, "window": window, "forecasts": forecasts,
         **series.host_series(host.pk, since)}
    )  # fmt: skip


@viewer_required
def state_graph(request: HttpRequest) -> HttpResponse:
    return render(request, "monitor/state_graph.html", {"horizon_min": round(HORIZON_S / 60)})


@viewer_required
def state_graph_json(request: HttpRequest) -> JsonResponse:
    """The fleet's lifecycle graph for drawing; with ?host=NAME, that host's state marked."""
    host = None
    if name := request.GET.get("host"):
        host = get_object_or_404(Host, name=name)
    return JsonResponse(graph_view.graph_for_drawing(host, timezone.now()))


def _window(request: HttpRequest) -> str:
    window = request.GET.get("window", DEFAULT_WINDOW)
    return window if window in WINDOWS_S else DEFAULT_WINDOW
