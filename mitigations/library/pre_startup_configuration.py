"""pre_startup_configuration (the seed's strategy): start vLLM again with the environment
that avoids the most common start-up and fragmentation failures: PyTorch's expandable
segments (torch's own advice in its OOM message)."""

from __future__ import annotations

from mitigations.base import Context, Mitigation, Plan, Risk, restart_plan

ALLOC_CONF = "expandable_segments:True"


class PreStartupConfiguration(Mitigation):
    name = "pre_startup_configuration"
    help = "Restart vLLM with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True."
    risk = Risk.MEDIUM
    failure_types = frozenset({"cuda_oom", "engine_dead"})
    states = frozenset({"failed_cuda_oom", "failed_engine_dead", "failed_config", "stopped",
                        "serving", "degraded"})  # fmt: skip

    def plan(self, ctx: Context) -> Plan:
        return restart_plan(
            ctx,
            self.name,
            {"PYTORCH_CUDA_ALLOC_CONF": ALLOC_CONF},
            "fragmentation: torch's allocator with expandable segments",
            action="restart_with_env",
            drain=ctx.state in ("serving", "degraded"),
        )
