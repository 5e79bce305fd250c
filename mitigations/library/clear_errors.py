"""clear_errors (the seed's "reset error state"): vLLM keeps no error state a client can reset,
so this does the nearest real thing: take requests again if vLLM was left paused (a drain that
was never undone) and drop the prefix cache, whose blocks may hold what the errors left."""

from __future__ import annotations

from mitigations.base import Context, Mitigation, Plan, Risk, Step, verification_for


class ClearErrors(Mitigation):
    name = "clear_errors"
    help = "Resume a paused vLLM and drop its prefix cache; nothing is interrupted."
    risk = Risk.LOW
    failure_types = frozenset({"system_resource", "performance_degradation", "engine_dead"})
    states = frozenset({"serving", "degraded", "draining"})

    def plan(self, ctx: Context) -> Plan:
        steps = (Step("resume"),) if ctx.state == "draining" else ()
        return Plan(
            strategy=self.name,
            steps=(*steps, Step("reset_prefix_cache")),
            params={},
            reason="resumes and clears cached state" if steps else "clears cached state",
            capacity_cost=0.0,
            duration_s=2.0,
            verification=verification_for(ctx),
        )
