"""optimize_inference (the seed's strategy): turn back on what makes vLLM fast when it was
turned off: CUDA graphs (no --enforce-eager), chunked prefill, prefix caching.

The seed also names the attention backend; vLLM picks the fastest one it supports by itself,
and the agent's allowlist does not offer to change it."""

from __future__ import annotations

from typing import Any

from mitigations.base import Context, Mitigation, MitigationError, Plan, Risk, restart_plan


class OptimizeInference(Mitigation):
    name = "optimize_inference"
    help = "Restart with CUDA graphs, chunked prefill and prefix caching back on."
    risk = Risk.MEDIUM
    failure_types = frozenset({"performance_degradation", "thermal_throttling"})

    def plan(self, ctx: Context) -> Plan:
        args = ctx.engine_args
        changes: dict[str, Any] = {}
        if args.get("enforce_eager"):
            changes["enforce_eager"] = None  # null removes the flag: CUDA graphs again
        if args.get("enable_chunked_prefill") is False:
            changes["enable_chunked_prefill"] = True
        if args.get("enable_prefix_caching") is False:
            changes["enable_prefix_caching"] = True
        if not changes:
            raise MitigationError("CUDA graphs, chunked prefill and prefix caching are all on")
        return restart_plan(ctx, self.name, changes, "turns on " + ", ".join(changes))
