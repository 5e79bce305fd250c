"""reset_prefix_cache: drop cached prefixes that hold KV blocks no running request needs."""

from __future__ import annotations

from mitigations.base import Context, Mitigation, Plan, Risk, Step, verification_for


class ResetPrefixCache(Mitigation):
    name = "reset_prefix_cache"
    help = "Ask vLLM to drop its prefix cache (development endpoints); nothing is interrupted."
    risk = Risk.LOW
    failure_types = frozenset({"kv_cache_exhausted", "performance_degradation"})

    def plan(self, ctx: Context) -> Plan:
        hit = (ctx.vllm.get("rates") or {}).get("prefix_cache_hit_pct")
        return Plan(
            strategy=self.name,
            steps=(Step("reset_prefix_cache"),),
            params={},
            reason="frees cached blocks"
            + (f" (prefix hit rate {hit:.0f} %)" if isinstance(hit, int | float) else ""),
            capacity_cost=0.0,
            duration_s=1.0,
            verification=verification_for(ctx),
        )
