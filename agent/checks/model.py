"""Checks of the model: its files on disk, and whether its weights and KV cache fit the GPUs.

The fit estimate follows vLLM's startup arithmetic per GPU: the budget is
gpu_memory_utilization x total; the weights' share, an overhead (CUDA context, the activation
peak of a profiling step, the CUDA-graph pool) and the KV cache must fit in it, and the KV
cache must hold at least one request of max_model_len. The overhead figures are estimates
(I) close to what vLLM reports for 8B-70B models on H100s; vLLM's own profiling decides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.checkpoint import ValidationCheck
from agent.checks.base import GIB, Context, failed, gib, passed, skipped, warned
from agent.model_shape import ModelShape, read_config, weight_files

NON_TORCH_BYTES = int(0.6 * GIB)  # CUDA context, allocator bookkeeping (I)
NCCL_BYTES = int(0.25 * GIB)  # NCCL buffers with tensor parallelism (I)
GRAPH_BYTES_PER_CAPTURE_SIZE = 4_340_000  # CUDA-graph pool per captured batch size (I)
MAX_CAPTURE_SIZE = 512
LARGE_GPU_BYTES = 70 * GIB  # vLLM's larger scheduler defaults start at 70 GiB (reference §4)
DEFAULT_BLOCK_SIZE = 16
MIN_CONCURRENCY = 2.0  # fewer full-length requests than this in the KV cache: preemption
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """One GPU's share of a deployment, in bytes."""

    budget_bytes: int
    weights_bytes: int
    overhead_bytes: int
    kv_bytes: int  # what is left for the KV cache (negative: nothing is)
    kv_bytes_per_token: int
    kv_tokens: int  # KV capacity in tokens, whole blocks

    def concurrency(self, max_model_len: int) -> float:
        return self.kv_tokens / max_model_len


@dataclass(frozen=True, slots=True)
class Deployment:
    """The engine arguments that size memory, resolved to numbers."""

    gpu_total_bytes: int
    gpu_name: str
    utilization: float
    tp: int = 1
    pp: int = 1
    max_num_seqs: int | None = None  # None: vLLM's default for the GPU
    max_num_batched_tokens: int | None = None
    kv_dtype_bytes: int = 2
    cuda_graphs: bool = True
    cpu_offload_bytes: int = 0
    kv_cache_memory_bytes: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE

    @property
    def large_gpu(self) -> bool:
        return self.gpu_total_bytes >= LARGE_GPU_BYTES and "A100" not in self.gpu_name

    @property
    def seqs(self) -> int:
        return self.max_num_seqs or (1024 if self.large_gpu else 256)

    @property
    def batched_tokens(self) -> int:
        return self.max_num_batched_tokens or (8192 if self.large_gpu else 2048)


def plan_memory(shape: ModelShape, d: Deployment) -> MemoryPlan:
    """Return how one GPU's memory splits between weights, overhead and KV cache."""
    weights = max(0, (shape.weights_bytes or 0) // (d.tp * d.pp) - d.cpu_offload_bytes)
    overhead = _overhead(shape, d)
    if d.kv_cache_memory_bytes is not None:
        kv = d.kv_cache_memory_bytes
        budget = weights + overhead + kv
    else:
        budget = int(d.utilization * d.gpu_total_bytes)
        kv = budget - weights - overhead
    per_token = shape.kv_bytes_per_token(d.kv_dtype_bytes, d.tp, d.pp)
    blocks = max(0, kv) // (per_token * d.block_size)
    return MemoryPlan(budget, weights, overhead, kv, per_token, blocks * d.block_size)


def _overhead(shape: ModelShape, d: Deployment) -> int:
    # The profiling step's activations: hidden states, attention and MLP intermediates for
    # the step's tokens, plus float32 logits for one token of every sequence.
    per_token = (4 * shape.hidden_size + 2 * shape.intermediate_size // d.tp) * shape.dtype_bytes
    logits = d.seqs * (shape.vocab_size // d.tp) * 4
    activation = d.batched_tokens * per_token + logits
    graphs = min(2 * d.seqs, MAX_CAPTURE_SIZE) * GRAPH_BYTES_PER_CAPTURE_SIZE
    nccl = NCCL_BYTES if d.tp > 1 else 0
    return NON_TORCH_BYTES + nccl + activation + (graphs if d.cuda_graphs else 0)


def parse_max_model_len(value: object) -> int | None:
    """Return --max-model-len as tokens (1k = 1000, 1K = 1024); None for -1/auto (vLLM fits it)."""
    if value is None:
        return None
    text = str(value).strip()
    if text in ("-1", "auto"):
        return None
    scale = {"k": 1000, "K": 1024, "m": 1_000_000, "M": 1024 * 1024}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    return int(float(number) * scale)


# ---------------------------------------------------------------------------- model_fit


def check_model_fit(ctx: Context) -> ValidationCheck:
    """The model's weights plus a KV cache for max_model_len fit the GPU budget."""
    if ctx.command is None:
        return skipped("model_fit", "no vLLM command: no model to size")
    shape = ctx.model.shape
    if shape is None or not shape.weights_bytes:
        return skipped("model_fit", f"cannot size the model: {ctx.model.reason}")
    max_len = _max_len(ctx, shape)
    too_long = _too_long(ctx, shape, max_len)
    if too_long is not None:
        return too_long
    gpus = ctx.used_gpus
    if ctx.nvml.error is not None or not gpus:
        return _need_without_gpus(ctx, shape, max_len)
    smallest = min(gpus, key=lambda g: g.total_bytes)
    plan = plan_memory(shape, _deployment(ctx, smallest.total_bytes, smallest.name or ""))
    return _judge_fit(ctx, shape, plan, max_len)


def _judge_fit(
    ctx: Context, shape: ModelShape, plan: MemoryPlan, max_len: int | None
) -> ValidationCheck:
    value = (
        f"per GPU: budget {gib(plan.budget_bytes)} = weights {gib(plan.weights_bytes)} + "
        f"overhead ~{gib(plan.overhead_bytes)} + KV {gib(max(plan.kv_bytes, 0))} "
        f"({plan.kv_tokens:,} tokens)"
    )
    source = f"[{ctx.model.reason}]"
    if plan.kv_tokens == 0:
        return _no_room(ctx, shape, plan, value, source)
    if max_len is None:
        return passed(
            "model_fit",
            f"fits; vLLM will pick a max_model_len of about {plan.kv_tokens:,} tokens {source}",
            value=value,
        )
    expected = f"KV >= {max_len:,} tokens (max_model_len)"
    if plan.kv_tokens < max_len:
        return _too_small_for_max_len(plan, max_len, value, expected, source)
    concurrency = plan.concurrency(max_len)
    if concurrency < MIN_CONCURRENCY:
        return warned(
            "model_fit",
            f"fits, but the KV cache holds only {concurrency:.1f} "
            f"requests of {max_len:,} tokens: expect preemption under load {source}",
            value=value,
            expected=expected,
            fix="lower --max-model-len, use --kv-cache-dtype fp8, or raise --tensor-parallel-size",
        )
    return passed(
        "model_fit",
        f"fits: {concurrency:.1f}x concurrency at {max_len:,} tokens {source}",
        value=value,
        expected=expected,
    )


def _no_room(
    ctx: Context, shape: ModelShape, plan: MemoryPlan, value: str, source: str
) -> ValidationCheck:
    message = (
        "the weights and overhead leave no memory for the KV cache: vLLM would fail with "
        f"'No available memory for the cache blocks' {source}"
    )
    fix = "raise --tensor-parallel-size, use a quantized model, or --cpu-offload-gb"
    details: dict[str, object] = {}
    bigger = ctx.tensor_parallel * 2
    if (
        len(ctx.visible_gpus) >= bigger * ctx.pipeline_parallel
        and shape.attention_heads % bigger == 0
    ):
        fix = f"raise --tensor-parallel-size to {bigger} ({len(ctx.visible_gpus)} GPUs are visible)"
        details = {
            "fix_action": "restart_with_args",
            "fix_params": {"tensor_parallel_size": bigger},
        }
    return failed("model_fit", message, value=value, expected="KV > 0", fix=fix, **details)


def _too_small_for_max_len(
    plan: MemoryPlan, max_len: int, value: str, expected: str, source: str
) -> ValidationCheck:
    fit = plan.kv_tokens
    return failed(
        "model_fit",
        f"the KV cache holds {fit:,} tokens, less than one request of "
        f"max_model_len {max_len:,}: vLLM would refuse to start {source}",
        value=value,
        expected=expected,
        fix=f"lower --max-model-len to {fit} (or use --kv-cache-dtype fp8, or raise "
        "--gpu-memory-utilization)",
        fix_action="restart_with_args",
        fix_params={"max_model_len": fit},
    )


def _too_long(ctx: Context, shape: ModelShape, max_len: int | None) -> ValidationCheck | None:
    derived = shape.max_position
    allowed = ctx.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") == "1"
    if max_len is None or derived is None or max_len <= derived or allowed:
        return None
    return failed(
        "model_fit",
        f"--max-model-len {max_len} is longer than the model's {derived}: vLLM refuses it",
        value=f"max_model_len {max_len}",
        expected=f"<= {derived}",
        fix=f"lower --max-model-len to {derived}",
        fix_action="restart_with_args",
        fix_params={"max_model_len": derived},
    )


def _need_without_gpus(ctx: Context, shape: ModelShape, max_len: int | None) -> ValidationCheck:
    tp, pp = ctx.tensor_parallel, ctx.pipeline_parallel
    weights = (shape.weights_bytes or 0) // (tp * pp)
    kv = shape.kv_bytes_per_token(_kv_dtype_bytes(ctx, shape), tp, pp) * (max_len or 0)
    need = f"per GPU: weights {gib(weights)}" + (
        f" + KV for one {max_len:,}-token request {gib(kv)}" if max_len else ""
    )
    why = ctx.nvml.error or "no visible GPU"
    return skipped(
        "model_fit",
        f"cannot compare with the GPUs: {why}; the model needs {need} plus overhead "
        f"[{ctx.model.reason}]",
        value=need,
    )


def _deployment(ctx: Context, total: int, name: str) -> Deployment:
    optimization = ctx.arg("optimization_level")
    kv_memory = ctx.arg("kv_cache_memory_bytes")
    return Deployment(
        gpu_total_bytes=total,
        gpu_name=name,
        utilization=ctx.gpu_memory_utilization,
        tp=ctx.tensor_parallel,
        pp=ctx.pipeline_parallel,
        max_num_seqs=ctx.arg("max_num_seqs"),
        max_num_batched_tokens=ctx.arg("max_num_batched_tokens"),
        kv_dtype_bytes=_kv_dtype_bytes(ctx, ctx.model.shape),
        cuda_graphs=not ctx.arg("enforce_eager", False) and optimization != 0,
        cpu_offload_bytes=int(float(ctx.arg("cpu_offload_gb", 0) or 0) * GIB),
        kv_cache_memory_bytes=int(kv_memory) if kv_memory is not None else None,
        block_size=int(ctx.arg("block_size", DEFAULT_BLOCK_SIZE) or DEFAULT_BLOCK_SIZE),
    )


def _kv_dtype_bytes(ctx: Context, shape: ModelShape | None) -> int:
    kv_dtype = str(ctx.arg("kv_cache_dtype", "auto"))
    if any(k in kv_dtype for k in ("fp8", "int8", "turboquant")):
        return 1
    if kv_dtype in ("float16", "bfloat16"):
        return 2
    dtype = str(ctx.arg("dtype", "auto"))
    if dtype in ("float32", "float"):
        return 4
    return shape.dtype_bytes if shape is not None else 2


def _max_len(ctx: Context, shape: ModelShape) -> int | None:
    given = ctx.arg("max_model_len")
    return parse_max_model_len(given) if given is not None else shape.max_position


# ---------------------------------------------------------------------------- model_files


def check_model_files(ctx: Context) -> ValidationCheck:
    """The model's config and weights are on disk and readable (or will be downloaded)."""
    if ctx.command is None or not ctx.command.model:
        return skipped("model_files", "no model in the vLLM command")
    model = ctx.command.model
    if Path(model).expanduser().is_file():
        return _single_file(Path(model).expanduser())
    folder = ctx.model.folder
    if folder is None:
        return _not_on_disk(ctx, model)
    try:
        read_config(folder.path)
    except ValueError as exc:
        return failed(
            "model_files",
            str(exc),
            value=str(folder.path),
            fix="re-download the model (huggingface-cli download <repo>)",
        )
    return _weights_verdict(ctx, folder.path, folder.how)


def _weights_verdict(ctx: Context, folder: Path, how: str) -> ValidationCheck:
    files = weight_files(folder)
    kind = files.kind or "weight"
    value = f"{len(files.files)} {kind} file(s), {gib(files.weights_bytes)} in {how} {folder}"
    fix = "re-download the model (huggingface-cli download <repo>) or fix the file permissions"
    if files.problems:
        return failed("model_files", "; ".join(files.problems[:5]), value=value, fix=fix)
    if not files.files:
        return failed(
            "model_files",
            f"no weights (*.safetensors, *.bin, *.pt) in {folder}",
            value=value,
            fix=fix,
        )
    tokenizer = ctx.arg("tokenizer") or ctx.arg("skip_tokenizer_init")
    if not tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return warned(
            "model_files",
            f"no tokenizer files in {folder}",
            value=value,
            fix="pass --tokenizer, or download the tokenizer files too",
        )
    return passed("model_files", f"config and weights present and readable: {value}", value=value)


def _single_file(path: Path) -> ValidationCheck:
    if not os.access(path, os.R_OK):
        return failed(
            "model_files",
            f"{path} is not readable by this user",
            value=str(path),
            fix=f"chmod o+r {path} or run vLLM as its owner",
        )
    return passed(
        "model_files", f"{path} ({gib(path.stat().st_size)}) is readable", value=str(path)
    )


def _not_on_disk(ctx: Context, model: str) -> ValidationCheck:
    if model.startswith(("/", ".", "~")):
        return failed(
            "model_files",
            f"{model} does not exist",
            value=model,
            fix="correct the model path, or copy the model there",
        )
    offline = [name for name in OFFLINE_ENV if ctx.environ.get(name, "0") not in ("", "0")]
    if offline:
        return failed(
            "model_files",
            f"{model} is not in the Hugging Face cache and "
            f"{offline[0]} is set: vLLM cannot download it",
            value=model,
            fix=f"download it first (huggingface-cli download {model}) or unset {offline[0]}",
        )
    token = "HF_TOKEN is set" if ctx.environ.get("HF_TOKEN") else "HF_TOKEN is not set"
    return warned(
        "model_files",
        f"{model} is not on disk yet: vLLM will download it at start "
        f"(needs network access, disk space, and a token for gated models; {token})",
        value=model,
        fix=f"pre-download it: huggingface-cli download {model}",
    )
