"""lower_max_num_seqs: fewer requests in a batch, so their KV blocks fit without preemption."""

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

SHARE = 0.75  # of the requests running at once when the cache filled
MIN_SEQS = 8


class LowerMaxNumSeqs(Mitigation):
    name = "lower_max_num_seqs"
    help = "Restart with --max-num-seqs at three quarters of what ran when the cache filled."
    risk = Risk.MEDIUM
    failure_types = frozenset({"kv_cache_exhausted", "cuda_oom", "performance_degradation"})

    def plan(self, ctx: Context) -> Plan:
        current = engine_int(ctx, "max_num_seqs", 1024 if big_gpus(ctx) else 256)
        running = ctx.vllm.get("requests_running") or current
        target = max(MIN_SEQS, int(SHARE * min(current, running)))
        if target >= current:
            raise MitigationError(f"max_num_seqs is already {current}, at or under {target}")
        return restart_plan(
            ctx,
            self.name,
            {"max_num_seqs": target},
            f"{running:.0f} requests ran at once with max_num_seqs {current}; "
            f"{target} keeps their KV blocks in the cache",
        )
