"""restart_with_args: restart vLLM with some engine arguments changed (reference §4).

Only these arguments, each with its type and range; null removes the flag (vLLM's default).
Attach mode needs a restart_template and the vllm_cmdline to rewrite.
"""

from __future__ import annotations

from typing import Any

from agent.actions.base import Action, ActionContext, ActionError, Param
from agent.control import ControlError

KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "float16", "bfloat16")


class RestartWithArgs(Action):
    name = "restart_with_args"
    help = "Restart vLLM with changed engine arguments; null removes a flag."
    needs_a_param = True
    params = {
        "max_num_seqs": Param("int", "requests in a batch", 1, 65536, nullable=True),
        "max_num_batched_tokens": Param(
            "int", "tokens per engine step", 16, 1_048_576, nullable=True
        ),
        "gpu_memory_utilization": Param(
            "float", "fraction of GPU memory vLLM may use", 0.05, 0.99, nullable=True
        ),
        "max_model_len": Param("int", "context length", 16, 10_485_760, nullable=True),
        "enforce_eager": Param("bool", "no CUDA graphs: less memory, slower", nullable=True),
        "cpu_offload_gb": Param("float", "weights offloaded to CPU, GiB", 0, 1024, nullable=True),
        "swap_space": Param("float", "CPU swap, GiB (vLLM before 2026-03)", 0, 1024, nullable=True),
        "kv_cache_dtype": Param("str", "KV-cache element type", choices=KV_CACHE_DTYPES,
                                nullable=True),
        "enable_prefix_caching": Param("bool", "prefix caching", nullable=True),
        "enable_chunked_prefill": Param("bool", "chunked prefill", nullable=True),
        # The pre-startup validator's fixes: spread the model over more GPUs, and stop
        # blinding the monitor (null removes --disable-log-stats).
        "tensor_parallel_size": Param("int", "GPUs per model replica", 1, 64, nullable=True),
        "disable_log_stats": Param("bool", "removes every vllm: metric", nullable=True),
    }  # fmt: skip

    def refusal(self, ctx: ActionContext, params: dict[str, Any]) -> str | None:
        return ctx.vllm.restart_refusal(args=True, env=False)

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await ctx.vllm.restart(args=params)
        except ControlError as exc:
            raise ActionError(str(exc)) from None
        command = ctx.vllm.command
        return {**result, "engine_args": dict(command.args) if command else params}
