"""Which predictions to open, keep and close, so a prediction does not flap on and off. Pure.

A prediction opens when its probability reaches OPEN_AT, stays open between the two
thresholds, and closes when it falls below CLOSE_AT, but not before it has been open for
MIN_OPEN_S (a forecast that wobbles around one value must not page an operator twice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from learning.prediction import Prediction

OPEN_AT = 0.6
CLOSE_AT = 0.3
MIN_OPEN_S = 60.0


@dataclass
class Decision:
    opened: list[Prediction] = field(default_factory=list)
    kept: list[Prediction] = field(default_factory=list)  # still open, with fresh figures
    closed: list[str] = field(default_factory=list)  # failure types that no longer hold


def decide(
    open_since: Mapping[str, float], predictions: Sequence[Prediction], now: float
) -> Decision:
    """Return what changes, given the open predictions (failure type -> opened at, epoch s)."""
    decision = Decision()
    latest = {p.failure_type: p for p in predictions}
    for failure_type, prediction in latest.items():
        if failure_type in open_since:
            if _should_close(prediction.probability, open_since[failure_type], now):
                decision.closed.append(failure_type)
            else:
                decision.kept.append(prediction)
        elif prediction.probability >= OPEN_AT:
            decision.opened.append(prediction)
    for failure_type, opened_at in open_since.items():
        if failure_type not in latest and _should_close(0.0, opened_at, now):
            decision.closed.append(failure_type)
    return decision


def _should_close(probability: float, opened_at: float, now: float) -> bool:
    return probability < CLOSE_AT and now - opened_at >= MIN_OPEN_S
