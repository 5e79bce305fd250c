"""restart_failed_workers (the seed's strategy): restart a vLLM that died or stopped making
progress. Requests stuck in a hung engine are lost, hence the high risk."""

from __future__ import annotations

from mitigations.base import (
    FAILED_STATES,
    Context,
    Mitigation,
    Plan,
    Risk,
    Step,
    restart_s,
    verification_for,
)


class RestartFailedWorkers(Mitigation):
    name = "restart_failed_workers"
    help = "Restart vLLM with the same arguments (a dead or hung engine)."
    risk = Risk.HIGH
    failure_types = frozenset({"hang", "engine_dead", "nccl_error", "cuda_oom", "system_resource"})
    states = FAILED_STATES | {"degraded", "serving"}

    def applies_to(self, ctx: Context) -> bool:
        # On a serving host only for a hang: anything else still answers requests.
        if ctx.state in ("serving", "degraded") and ctx.failure_type != "hang":
            return False
        return super().applies_to(ctx)

    def plan(self, ctx: Context) -> Plan:
        return Plan(
            strategy=self.name,
            steps=(Step("restart"),),
            params={},
            reason=f"vLLM is {ctx.state.replace('_', ' ')}",
            capacity_cost=1.0,
            duration_s=restart_s(ctx),
            verification=verification_for(ctx),
        )
