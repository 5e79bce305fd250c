"""lower_gpu_memory_utilization: leave more of the GPU to what vLLM does not plan for
(activations, fragmentation, another process)."""

from __future__ import annotations

from mitigations.base import (
    Context,
    Mitigation,
    MitigationError,
    Plan,
    Risk,
    engine_float,
    restart_plan,
)

STEP = 0.05
FLOOR = 0.5


class LowerGpuMemoryUtilization(Mitigation):
    name = "lower_gpu_memory_utilization"
    help = "Restart with --gpu-memory-utilization 0.05 lower (not under 0.5)."
    risk = Risk.MEDIUM
    failure_types = frozenset({"cuda_oom"})
    states = frozenset({"serving", "degraded", "failed_cuda_oom"})

    def plan(self, ctx: Context) -> Plan:
        current = engine_float(ctx, "gpu_memory_utilization", 0.92)
        target = round(max(FLOOR, current - STEP), 2)
        if target >= current:
            raise MitigationError(f"gpu_memory_utilization is already {current:g}", permanent=True)
        return restart_plan(
            ctx,
            self.name,
            {"gpu_memory_utilization": target},
            f"from {current:g}: leaves {100 * (1 - target):.0f} % of GPU memory outside vLLM",
            drain=ctx.state != "failed_cuda_oom",
        )
