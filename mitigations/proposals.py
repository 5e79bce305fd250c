"""From a trigger to a proposal: the plans that apply, ranked by the learner, and the gate's
verdict. Pure; the control plane stores what `draft()` returns (healing/).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from learning.continuous import ContinuousLearningSystem, Recommendation
from learning.labels import LearningContext, context_of
from mitigations import registry
from mitigations.base import Context, Plan
from mitigations.gate import FleetState, GateDecision, Request, Settings, decide

# How long a proposal waits for an operator, by risk. An expired low-risk proposal simply
# expires; a disruptive one is never executed by default: it escalates.
DEADLINE_S = {"low": 900.0, "medium": 600.0, "high": 300.0}
ON_EXPIRY = {"low": "expired", "medium": "escalated", "high": "escalated"}


@dataclass(frozen=True, slots=True)
class Option:
    plan: Plan
    risk: str
    recommendation: Recommendation


@dataclass(frozen=True, slots=True)
class Draft:
    context: LearningContext
    best: Option
    alternatives: tuple[Option, ...]
    gate: GateDecision
    deadline_s: float
    on_expiry: str
    not_possible: dict[str, str]  # strategies that apply but cannot plan now, and why


def draft(
    ctx: Context,
    learner: ContinuousLearningSystem,
    settings: Settings,
    fleet: FleetState,
    now: float,
    *,
    preferred: Sequence[str] = (),
    explore: bool = False,
    rng: random.Random | None = None,
) -> Draft | None:
    """Return the proposal for `ctx`, or None when no strategy can do anything.

    `preferred` (the trigger's interventions, best first) come before the library's other
    candidates in the learner's prior order."""
    plans = {p.strategy: p for p in registry.candidates(ctx)}
    if not plans:
        return None
    order = [s for s in preferred if s in plans] + [s for s in plans if s not in preferred]
    context = context_of(ctx.checkpoint, ctx.failure_type)
    ranked = learner.recommend(context, order, explore=explore, rng=rng)
    options = [
        Option(plans[r.strategy], str(registry.STRATEGIES[r.strategy].risk), r) for r in ranked
    ]
    best = options[0]
    request = Request(
        host=str(ctx.checkpoint.get("host") or ""),
        model=ctx.model,
        strategy=best.plan.strategy,
        risk=best.risk,
        confidence=best.recommendation.confidence,
        capacity_cost=best.plan.capacity_cost,
    )
    return Draft(
        context=context,
        best=best,
        alternatives=tuple(options[1:]),
        gate=decide(request, settings, fleet, now),
        deadline_s=DEADLINE_S[best.risk],
        on_expiry=ON_EXPIRY[best.risk],
        not_possible=registry.why_not(ctx),
    )
