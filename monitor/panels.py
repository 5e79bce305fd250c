"""What the host page shows beside its charts: state timeline, errors, GPU events, validation.

Rendered on page load and re-rendered for the live update when a poll brings new events.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.template.loader import render_to_string

from monitor import timeline
from monitor.models import Host

TIMELINE_WINDOW = timedelta(hours=1)


def host_events_context(host: Host, now: datetime) -> dict[str, Any]:
    start = now - TIMELINE_WINDOW
    transitions = list(host.transitions.filter(at__gte=start - timedelta(days=1))[:200])
    return {
        "host": host,
        "segments": timeline.segments(
            [(t.at, t.from_state, t.to_state) for t in transitions],
            start=start,
            end=now,
            current=host.lifecycle_state,
        ),
        "timeline_start": start,
        "transitions": transitions[:15],
        "errors": host.vllm_errors.all()[:15],
        "gpu_events": host.gpu_events.all()[:10],
        "validation": host.validation_reports.first(),
    }


def render_host_events(host: Host, now: datetime) -> str:
    return render_to_string("monitor/_host_events.html", host_events_context(host, now))
