"""lower_max_num_batched_tokens: a smaller token budget per engine step, smaller activation
peaks and less prefill pushed into the KV cache at once."""

from __future__ import annotations

from mitigations.base import (
    Context,
    Mitigation,
    MitigationError,
    Plan,
    Risk,
    big_gpus,
    engine_int,
    restart_plan,
)

FACTOR = 0.5
MIN_TOKENS = 512


class LowerMaxNumBatchedTokens(Mitigation):
    name = "lower_max_num_batched_tokens"
    help = "Restart with --max-num-batched-tokens halved (not under 512)."
    risk = Risk.MEDIUM
    failure_types = frozenset({"kv_cache_exhausted", "cuda_oom", "performance_degradation"})

    def plan(self, ctx: Context) -> Plan:
        current = engine_int(ctx, "max_num_batched_tokens", 8192 if big_gpus(ctx) else 2048)
        target = max(MIN_TOKENS, int(current * FACTOR))
        if target >= current:
            raise MitigationError(f"max_num_batched_tokens is already {current}")
        return restart_plan(
            ctx,
            self.name,
            {"max_num_batched_tokens": target},
            f"halves the per-step token budget from {current}",
        )
