"""The figures kept per incident, from plain data: lead time, time to detect, to mitigate and
to recover, and how it was healed. Pure: epoch seconds in, numbers out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A failure that began this long before the incident opened still counts as its failure
# (the guardrail that opened it needed its hold time; a dead engine's first checkpoint lags).
LOOK_BEFORE_S = 900.0


@dataclass(frozen=True, slots=True)
class Mitigation:
    started_at: float | None  # when its first step ran; None if it never ran
    outcome: str  # "success", "no_effect", "failure", "made_worse", "" (not verified)
    automatic: bool


@dataclass(frozen=True, slots=True)
class Figures:
    first_predicted_at: float | None
    failed_at: float | None
    mitigated_at: float | None
    lead_time_s: float | None
    detect_s: float | None
    mitigate_s: float | None
    recover_s: float | None
    healed_by: str  # automatic, approval, hand, itself


def figures(
    *,
    failure_type: str,
    opened_at: float,
    resolved_at: float,
    failures: Sequence[tuple[str, float]],
    predicted_at: Sequence[float],
    mitigations: Sequence[Mitigation],
    resolved_by_person: bool,
) -> Figures:
    """`failures` are (failure type, start) episodes the host's checkpoints show (the labeller
    of learning/history.py); `predicted_at` when predictions of this failure first appeared."""
    failed_at = min(
        (
            t
            for kind, t in failures
            if kind == failure_type and opened_at - LOOK_BEFORE_S <= t <= resolved_at
        ),
        default=None,
    )
    first_predicted = min((t for t in predicted_at if t <= resolved_at), default=None)
    lead = None
    if failed_at is not None and first_predicted is not None and first_predicted <= failed_at:
        lead = failed_at - first_predicted
    ran = [m for m in mitigations if m.started_at is not None]
    mitigated_at = min((m.started_at for m in ran if m.started_at is not None), default=None)
    return Figures(
        first_predicted_at=first_predicted,
        failed_at=failed_at,
        mitigated_at=mitigated_at,
        lead_time_s=lead,
        detect_s=None if failed_at is None else max(0.0, opened_at - failed_at),
        mitigate_s=None if mitigated_at is None else max(0.0, mitigated_at - opened_at),
        recover_s=max(0.0, resolved_at - opened_at),
        healed_by=healed_by(ran, resolved_by_person),
    )


def healed_by(mitigations: Sequence[Mitigation], resolved_by_person: bool) -> str:
    """The first mitigation that worked says how; without one, whoever resolved it."""
    for m in mitigations:
        if m.outcome == "success":
            return "automatic" if m.automatic else "approval"
    return "hand" if resolved_by_person else "itself"


def fleet_healed_by(members: Sequence[str]) -> str:
    """A fleet incident was healed automatically only if every host was; else by the most
    hands-on way any host needed."""
    for way in ("hand", "approval", "itself"):
        if way in members:
            return way
    return "automatic" if members else "itself"
