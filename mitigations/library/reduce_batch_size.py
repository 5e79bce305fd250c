"""reduce_batch_size (the seed's strategy): both batch limits down by a third at once, for
memory pressure whose cause is not yet known."""

from __future__ import annotations

from mitigations.base import Context, Mitigation, Plan, Risk, big_gpus, engine_int, restart_plan

FACTOR = 2 / 3


class ReduceBatchSize(Mitigation):
    name = "reduce_batch_size"
    help = "Restart with --max-num-seqs and --max-num-batched-tokens cut by a third."
    risk = Risk.MEDIUM
    failure_types = frozenset(
        {"cuda_oom", "kv_cache_exhausted", "thermal_throttling", "performance_degradation"}
    )

    def plan(self, ctx: Context) -> Plan:
        big = big_gpus(ctx)
        seqs = engine_int(ctx, "max_num_seqs", 1024 if big else 256)
        tokens = engine_int(ctx, "max_num_batched_tokens", 8192 if big else 2048)
        changes = {
            "max_num_seqs": max(8, int(seqs * FACTOR)),
            "max_num_batched_tokens": max(512, int(tokens * FACTOR)),
        }
        return restart_plan(
            ctx, self.name, changes, f"batch limits {seqs} seqs / {tokens} tokens cut by a third"
        )
