"""lower_max_model_len: a shorter context, so one long request cannot hold the KV cache."""

from __future__ import annotations

from mitigations.base import (
    Context,
    Mitigation,
    MitigationError,
    Plan,
    Risk,
    engine_int,
    restart_plan,
)

FACTOR = 0.5
MIN_LEN = 2048


class LowerMaxModelLen(Mitigation):
    name = "lower_max_model_len"
    help = "Restart with --max-model-len halved, or at the length vLLM said fits."
    risk = Risk.MEDIUM
    failure_types = frozenset({"kv_cache_exhausted", "cuda_oom"})
    states = frozenset({"serving", "degraded", "failed_cuda_oom", "failed_config"})

    def plan(self, ctx: Context) -> Plan:
        fits = _estimated_fit(ctx)
        current = engine_int(ctx, "max_model_len", 0)
        if fits:
            target, why = fits, f"vLLM estimated that {fits} tokens fit"
        elif current:
            target, why = max(MIN_LEN, int(current * FACTOR)), f"halves {current}"
        else:
            raise MitigationError("the checkpoint does not say max_model_len", permanent=True)
        if current and target >= current:
            raise MitigationError(f"max_model_len is already {current}")
        return restart_plan(ctx, self.name, {"max_model_len": target}, why)


def _estimated_fit(ctx: Context) -> int | None:
    """Return the length from vLLM's "estimated maximum model length is N" error, if seen."""
    for error in ctx.checkpoint.get("errors") or ():
        value = (error.get("fields") or {}).get("estimated_max_model_len")
        if isinstance(value, int) and value > 0:
            return value
    return None
