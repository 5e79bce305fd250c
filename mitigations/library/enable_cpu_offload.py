"""enable_cpu_offload (the seed's strategy): move part of the weights to CPU memory, so more
GPU memory is left for the KV cache and activations. Slower; a last resort before fewer GPUs."""

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

SHARE_OF_WEIGHTS = 0.1
MIN_GIB, MAX_GIB = 1.0, 64.0


class EnableCpuOffload(Mitigation):
    name = "enable_cpu_offload"
    help = "Restart with --cpu-offload-gb set to a tenth of the weights (per GPU)."
    risk = Risk.MEDIUM
    failure_types = frozenset({"cuda_oom", "kv_cache_exhausted"})
    states = frozenset({"serving", "degraded", "failed_cuda_oom"})

    def plan(self, ctx: Context) -> Plan:
        if engine_float(ctx, "cpu_offload_gb", 0.0) > 0:
            raise MitigationError("CPU offload is already on", permanent=True)
        weights = (ctx.checkpoint.get("startup") or {}).get("model_weights_gib") or 10.0
        gib = round(min(MAX_GIB, max(MIN_GIB, SHARE_OF_WEIGHTS * float(weights))), 1)
        return restart_plan(
            ctx,
            self.name,
            {"cpu_offload_gb": gib},
            f"{gib:g} GiB of {float(weights):.1f} GiB weights to CPU memory",
            drain=ctx.state != "failed_cuda_oom",
        )
