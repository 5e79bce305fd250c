"""enable_kv_cache_fp8: store the KV cache in fp8, about twice the tokens in the same memory."""

from __future__ import annotations

from mitigations.base import Context, Mitigation, MitigationError, Plan, Risk, restart_plan


class EnableKvCacheFp8(Mitigation):
    name = "enable_kv_cache_fp8"
    help = "Restart with --kv-cache-dtype fp8 (about twice the KV capacity; slight quality cost)."
    risk = Risk.MEDIUM
    failure_types = frozenset({"kv_cache_exhausted"})

    def plan(self, ctx: Context) -> Plan:
        dtype = ctx.engine_args.get("kv_cache_dtype") or (ctx.vllm.get("cache") or {}).get(
            "cache_dtype"
        )
        if dtype and str(dtype).startswith("fp8"):
            raise MitigationError(f"the KV cache is already {dtype}", permanent=True)
        return restart_plan(
            ctx, self.name, {"kv_cache_dtype": "fp8"}, f"KV cache {dtype or 'auto'} -> fp8"
        )
