"""The only module that sends to the Channels layer.

Two groups, one message each per polled batch, whatever the batch's size: "fleet" gets the
re-rendered host rows (swapped into the page by id), "checkpoints" gets the new chart points
keyed by host id, which each host page's consumer filters for its own host. A message per
host would cost a Redis round trip per checkpoint.
"""

from __future__ import annotations

import time
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string
from django.utils import timezone

from learning.prediction import Forecast
from monitor.analysis import AnalysisReport
from monitor.ingest import StoreReport
from monitor.models import Host
from monitor.panels import render_host_events
from monitor.predictions_panel import render_predictions

FLEET_GROUP = "fleet"
CHECKPOINTS_GROUP = "checkpoints"
APPROVALS_GROUP = "approvals"


class HostsUpdated(TypedDict):
    type: Literal["hosts_updated"]
    html: str
    stored_at: float


class CheckpointsStored(TypedDict):
    type: Literal["checkpoints_stored"]
    points: dict[str, dict[str, Any]]  # host id (str) -> summary figures
    panels: dict[str, str]  # host id (str) -> re-rendered events panels, for hosts with new events
    stored_at: float


class HostsAnalysed(TypedDict):
    type: Literal["hosts_analysed"]
    predictions: dict[str, str]  # host id (str) -> re-rendered predictions panel
    forecasts: dict[str, list[dict[str, Any]]]  # host id (str) -> forecasts as plain data


class ProposalsChanged(TypedDict):
    type: Literal["proposals_changed"]
    operator_html: str  # the queue with decision buttons
    viewer_html: str  # the same, read-only
    ids: list[int]


def hosts_updated(report: StoreReport) -> None:
    """Tell every open fleet and host page what the batch in `report` changed."""
    if not report.changed_hosts:
        return
    stored_at = time.time()
    messages: list[tuple[str, Any]] = [
        (
            FLEET_GROUP,
            HostsUpdated(
                type="hosts_updated",
                html=render_rows(report.changed_hosts, stored_at),
                stored_at=stored_at,
            ),
        ),
    ]
    if report.stored:
        now = timezone.now()
        panels = {
            str(host.pk): render_host_events(host, now)
            for host in report.changed_hosts
            if host.pk in report.hosts_with_events
        }
        points = {str(host.pk): figures for host, figures in report.stored}
        messages.append(
            (
                CHECKPOINTS_GROUP,
                CheckpointsStored(
                    type="checkpoints_stored", points=points, panels=panels, stored_at=stored_at
                ),
            )
        )
    async_to_sync(_send)(messages)


def hosts_analysed(hosts: list[Host], findings: AnalysisReport) -> None:
    """Tell the pages what the analysis of a batch found: risks, predictions, forecasts."""
    if not hosts:
        return
    # Open predictions change their figures on every analysis: re-render those hosts'.
    shown = [h for h in hosts if h.risk > 0 or h.pk in findings.changed]
    message = HostsAnalysed(
        type="hosts_analysed",
        predictions={str(h.pk): render_predictions(h) for h in shown},
        forecasts={
            str(host_id): [_forecast_json(f) for f in fcs]
            for host_id, fcs in findings.forecasts.items()
        },
    )
    messages: list[tuple[str, Any]] = [(CHECKPOINTS_GROUP, message)]
    risky = [h for h in hosts if h.pk in findings.risk_changed]
    if risky:
        html = render_rows(risky, None)
        messages.append((FLEET_GROUP, HostsUpdated(type="hosts_updated", html=html, stored_at=0.0)))
    async_to_sync(_send)(messages)


def _forecast_json(fc: Forecast) -> dict[str, Any]:
    return {"metric": fc.metric, "times": fc.times, "values": fc.values, "lower": fc.lower,
            "upper": fc.upper, "crossings": fc.crossings}  # fmt: skip


def render_rows(hosts: list[Host], stored_at: float | None = None) -> str:
    return "".join(
        render_to_string(
            "monitor/_host_row.html", {"host": host, "oob": True, "stored_at": stored_at}
        )
        for host in hosts
    )


async def _send(messages: list[tuple[str, Any]]) -> None:
    layer = get_channel_layer()
    for group, message in messages:
        await layer.group_send(group, message)


def proposals_changed(ids: list[int]) -> None:
    """Redraw the approvals queue in every open dashboard: new proposals appear, decided ones
    leave, at once for everyone. The queue is short: it is sent whole, for each role."""
    from healing import queue

    now = timezone.now()
    context = {"pending": queue.pending(), "recent": queue.recent(), "pauses": queue.pauses(now),
               "oob": True}  # fmt: skip
    message = ProposalsChanged(
        type="proposals_changed",
        operator_html=render_to_string("healing/_queue.html", {**context, "can_decide": True}),
        viewer_html=render_to_string("healing/_queue.html", {**context, "can_decide": False}),
        ids=ids,
    )
    async_to_sync(_send)([(APPROVALS_GROUP, message)])
