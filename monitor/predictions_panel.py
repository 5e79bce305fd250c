"""The host page's predictions panel: the host's open predictions and the model they rest on."""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string

from learning.prediction import DEFAULT_HORIZON_S
from monitor.models import Host, LearnedModel


def predictions_context(host: Host) -> dict[str, Any]:
    active = (
        LearnedModel.objects.filter(kind="patterns", active=True).only("version", "card").first()
    )
    card = {"version": active.version, **active.card} if active else None
    return {
        "predictions": host.predictions.filter(closed_at__isnull=True),
        "horizon_min": round(DEFAULT_HORIZON_S / 60),
        "model_card": card,
    }


def render_predictions(host: Host) -> str:
    return render_to_string("monitor/_predictions.html", predictions_context(host))
