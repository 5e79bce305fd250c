"""Read and rewrite a vLLM command line: `vllm serve MODEL --max-num-seqs 256 ...`.

Arguments are keyed by vLLM's engine-argument names (`max_num_seqs`), typed where the type is
known, and kept in their order, so a restart with changed arguments changes only those.
Nothing here runs anything; the supervisor executes the argv list without a shell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# `vllm serve` flags that take no value (store_true, or BooleanOptionalAction with --no-*).
BOOLEAN_FLAGS = frozenset(
    {
        "enforce_eager",
        "trust_remote_code",
        "disable_log_stats",
        "enable_sleep_mode",
        "enable_lora",
        "enable_server_load_tracking",
        "disable_custom_all_reduce",
        "enable_prefix_caching",
        "enable_chunked_prefill",
        "enable_log_requests",
        "disable_log_requests",
        "enable_expert_parallel",
        "async_scheduling",
        "enable_auto_tool_choice",
        "disable_frontend_multiprocessing",
        "kv_cache_metrics",
        "enable_mfu_metrics",
        "cudagraph_metrics",
        "scheduler_reserve_full_isl",
        "disable_sliding_window",
        "enable_prompt_tokens_details",
    }
)
INT_ARGS = frozenset(
    {
        "max_num_seqs",
        "max_num_batched_tokens",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "data_parallel_size",
        "port",
        "block_size",
        "kv_cache_memory_bytes",
        "api_server_count",
        "max_cudagraph_capture_size",
        "num_gpu_blocks_override",
        "shutdown_timeout",
        "seed",
        "max_num_partial_prefills",
    }
)
FLOAT_ARGS = frozenset(
    {"gpu_memory_utilization", "cpu_offload_gb", "swap_space", "watermark", "kv_offloading_size"}
)
SHORT_FLAGS = {
    "-tp": "tensor_parallel_size",
    "-pp": "pipeline_parallel_size",
    "-dp": "data_parallel_size",
    "-q": "quantization",
}


class VllmArgsError(ValueError):
    pass


@dataclass(slots=True)
class VllmCommand:
    program: list[str]  # what comes before the model: ["vllm", "serve"], or a python -m form
    model: str | None
    args: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)

    def with_args(self, changes: dict[str, Any]) -> VllmCommand:
        """Return a copy with `changes` applied: None removes a flag, True/False set a boolean."""
        args = dict(self.args)
        for name, value in changes.items():
            if value is None:
                args.pop(name, None)
            else:
                args[name] = value
        return VllmCommand(list(self.program), self.model, args)

    def argv(self) -> list[str]:
        result = list(self.program)
        if self.model is not None:
            result += ["--model", self.model] if _model_is_flag(self.program) else [self.model]
        for name, value in self.args.items():
            result.extend(_render(name, value))
        return result


def parse(argv: Sequence[str]) -> VllmCommand:
    """Return the command in `argv`; raise VllmArgsError when it is not a vLLM server command."""
    tokens = list(argv)
    program, rest = _split_program(tokens)
    model = None
    if not _model_is_flag(program) and rest and not rest[0].startswith("-"):
        model, rest = rest[0], rest[1:]
    args = _parse_flags(rest)
    if _model_is_flag(program):
        model = args.pop("model", None)
    elif "model" in args:  # `vllm serve --model X` is accepted too
        model = args.pop("model")
    return VllmCommand(program, model, args)


def _split_program(tokens: list[str]) -> tuple[list[str], list[str]]:
    if "serve" in tokens:
        at = tokens.index("serve") + 1
        return tokens[:at], tokens[at:]
    if "-m" in tokens:
        at = tokens.index("-m") + 2
        return tokens[:at], tokens[at:]
    raise VllmArgsError(f"not a vLLM server command (no 'serve' and no '-m'): {tokens!r}")


def _model_is_flag(program: list[str]) -> bool:
    # The OpenAI api_server module takes the model as --model, not as a positional.
    return "serve" not in program


def _parse_flags(tokens: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        name, value, i = _next_flag(tokens, i)
        args[name] = _typed(name, value)
    return args


def _next_flag(tokens: list[str], i: int) -> tuple[str, Any, int]:
    token = tokens[i]
    if not token.startswith("-"):
        raise VllmArgsError(f"unexpected argument {token!r}: arguments are --name [value]")
    if token in SHORT_FLAGS:
        name, inline = SHORT_FLAGS[token], None
    elif token.startswith("-O") and token[2:].isdigit():
        return "optimization_level", int(token[2:]), i + 1
    else:
        key, _, inline_value = token.lstrip("-").partition("=")
        name, inline = key.replace("-", "_"), (inline_value if "=" in token else None)
    if inline is not None:
        return name, inline, i + 1
    if name.startswith("no_") and name[3:] in BOOLEAN_FLAGS:
        return name[3:], False, i + 1
    values = []
    j = i + 1
    while j < len(tokens) and not _is_flag(tokens[j]) and name not in BOOLEAN_FLAGS:
        values.append(tokens[j])
        j += 1
    if not values:
        return name, True, j
    return name, values[0] if len(values) == 1 else values, j


def _is_flag(token: str) -> bool:
    return token.startswith("-") and not _is_number(token)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _typed(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if name in INT_ARGS:
            return int(value)
        if name in FLOAT_ARGS:
            return float(value)
    except ValueError:
        raise VllmArgsError(f"--{name.replace('_', '-')} {value!r}: not a number") from None
    return value


def _render(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if value is True:
        return [flag]
    if value is False:
        return ["--no-" + name.replace("_", "-")] if name in BOOLEAN_FLAGS else []
    if isinstance(value, list):
        return [flag, *(str(v) for v in value)]
    return [flag, str(value)]
