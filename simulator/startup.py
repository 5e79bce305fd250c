"""The startup of a vLLM server: its phases, how long each takes, and the lines it logs.

The sequence and the messages follow reference §5. Durations are those of an 8B model on an
H100 (init total ~35 s), scaled by the model's size per GPU and by the host's
`startup_scale`, so a demo fleet comes up in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simulator.catalog import GIB, GpuSpec, ModelSpec
from simulator.engine_args import EngineArgs
from simulator.failures import Line, startup_failure
from simulator.kv_sizing import NON_TORCH_BYTES, KvPlan, capture_sizes

VLLM_VERSION = "0.24.0"
NCCL_VERSION = "2.27.3"


@dataclass(frozen=True, slots=True)
class StartupEvent:
    at_s: float  # since the process started
    phase: str  # the LifecycleState value the server is in from here on
    lines: tuple[Line, ...]
    gpu_bytes: int | None = None  # what the vLLM process holds per GPU from here on
    checks_memory: bool = False  # worker init: vLLM compares free memory with its budget


@dataclass(frozen=True, slots=True)
class StartupContext:
    args: EngineArgs  # resolved
    given: dict[str, Any]  # the non-default arguments as given
    model: ModelSpec
    gpu: GpuSpec
    plan: KvPlan | None  # None when the memory budget cannot hold the model ...
    failure: str | None  # ... and this is vLLM's error for it
    scale: float
    dev_mode: bool
    pid: int


def plan_startup(ctx: StartupContext) -> list[StartupEvent]:
    """Return the startup events in time order; the last one starts serving."""
    events: list[StartupEvent] = []
    t = 0.0
    for duration, build in _PHASES:
        if build is _kv_sized and ctx.plan is None:
            events.append(StartupEvent(t, "failed", startup_failure(ctx.failure or "")))
            break
        event = build(ctx, t)
        if event is not None:
            events.append(event)
            t = event.at_s + duration * _time_factor(ctx)
    return events


def _time_factor(ctx: StartupContext) -> float:
    per_gpu_b = ctx.model.params_b / ctx.args.tensor_parallel_size
    return ctx.scale * math.sqrt(max(1.0, per_gpu_b / 8.0))


def _process_start(ctx: StartupContext, t: float) -> StartupEvent:
    a = ctx.args
    return StartupEvent(
        t,
        "initializing",
        (
            _api(
                "api_server.py:1880", f"vLLM server version {VLLM_VERSION}, serving model {a.model}"
            ),
            _api("utils.py:253", f"non-default args: {ctx.given!r}"),
        ),
    )


def _config_resolved(ctx: StartupContext, t: float) -> StartupEvent:
    a = ctx.args
    return StartupEvent(
        t,
        "initializing",
        (
            _api("model.py:631", f"Resolved architecture: {ctx.model.architecture}"),
            _api("model.py:1742", f"Using max model len {a.max_model_len}"),
            _api(
                "scheduler.py:226",
                "Chunked prefill is enabled with "
                f"max_num_batched_tokens={a.max_num_batched_tokens}.",
            ),
        ),
    )


def _engine_init(ctx: StartupContext, t: float) -> StartupEvent:
    a = ctx.args
    config = (
        f"model='{a.model}', speculative_config=None, tokenizer='{a.model}', "
        "skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, "
        f"trust_remote_code=False, dtype=torch.bfloat16, max_seq_len={a.max_model_len}, "
        f"download_dir=None, load_format=auto, tensor_parallel_size={a.tensor_parallel_size}, "
        "pipeline_parallel_size=1, data_parallel_size=1, disable_custom_all_reduce=False, "
        "quantization=None, enforce_eager="
        f"{a.enforce_eager}, kv_cache_dtype={a.kv_cache_dtype}, device_config=cuda, "
        f"seed=0, served_model_name={a.model_name}, "
        f"enable_prefix_caching={a.enable_prefix_caching}, enable_chunked_prefill=True"
    )
    lines = [
        _core("core.py:93", f"Initializing a V1 LLM engine (v{VLLM_VERSION}) with config: {config}")
    ]
    if a.tensor_parallel_size > 1:
        tp = a.tensor_parallel_size
        for rank in range(tp):
            lines.append(
                _worker(
                    rank,
                    "parallel_state.py:1208",
                    f"world_size={tp} rank={rank} local_rank={rank} "
                    "distributed_init_method=tcp://127.0.0.1:43617 backend=nccl",
                )
            )
        lines.append(_worker(0, "pynccl.py:111", f"vLLM is using nccl=={NCCL_VERSION}"))
    return StartupEvent(t, "initializing", tuple(lines))


def _load_start(ctx: StartupContext, t: float) -> StartupEvent:
    backends = "['FLASH_ATTN', 'FLASHINFER', 'TRITON_ATTN', 'FLEX_ATTENTION']"
    return StartupEvent(
        t,
        "loading_weights",
        (
            _rank0(ctx, "gpu_model_runner.py:3338", f"Starting to load model {ctx.args.model}..."),
            _rank0(
                ctx,
                "cuda.py:389",
                f"Using FLASH_ATTN attention backend out of potential backends: {backends}",
            ),
        ),
        gpu_bytes=NON_TORCH_BYTES,
        checks_memory=True,
    )


def _load_done(ctx: StartupContext, t: float) -> StartupEvent:
    load_s = _LOAD_S * _time_factor(ctx)
    weights = ctx.model.weight_bytes // ctx.args.tensor_parallel_size
    shards = ctx.model.shards
    bar = (
        f"Loading safetensors checkpoint shards: 100% Completed | {shards}/{shards} "
        f"[00:{int(load_s):02d}<00:00,  {load_s / shards:.2f}s/it]"
    )
    return StartupEvent(
        t,
        "loading_weights",
        (
            _rank0(ctx, "", bar),
            _rank0(
                ctx, "default_loader.py:267", f"Loading weights took {load_s - 0.4:.2f} seconds"
            ),
            _rank0(
                ctx,
                "gpu_model_runner.py:3420",
                f"Model loading took {weights / GIB:.2f} GiB memory and {load_s:.6f} seconds",
            ),
        ),
        gpu_bytes=NON_TORCH_BYTES + weights,
    )


def _compile(ctx: StartupContext, t: float) -> StartupEvent | None:
    if ctx.args.enforce_eager:
        return None
    compile_s = _COMPILE_S * _time_factor(ctx)
    dynamo_s = compile_s / 4
    return StartupEvent(
        t,
        "profiling_memory",
        (
            _rank0(
                ctx,
                "backends.py:631",
                "Using cache directory: /root/.cache/vllm/torch_compile_cache/3f9c1e2ab7/"
                "rank_0_0/backbone for vLLM's torch.compile",
            ),
            _rank0(ctx, "monitor.py:34", f"Dynamo bytecode transform time: {dynamo_s:.2f} s"),
            _rank0(
                ctx,
                "backends.py:248",
                f"Compiling a graph for compile range (1, {ctx.args.max_num_batched_tokens}) "
                f"takes {compile_s - dynamo_s:.2f} s",
            ),
        ),
    )


def _profiled(ctx: StartupContext, t: float) -> StartupEvent:
    return StartupEvent(
        t,
        "profiling_memory",
        (
            _rank0(
                ctx,
                "gpu_worker.py:336",
                f"Initial profiling/warmup run took {_PROFILE_S * _time_factor(ctx):.2f} s",
            ),
        ),
    )


def _kv_sized(ctx: StartupContext, t: float) -> StartupEvent:
    plan, a = ctx.plan, ctx.args
    assert plan is not None  # plan_startup stops before this phase without a plan
    tokens = plan.kv_cache_size_tokens
    return StartupEvent(
        t,
        "allocating_kv_cache",
        (
            _rank0(
                ctx,
                "gpu_worker.py:361",
                f"Available KV cache memory: {plan.kv_bytes / GIB:.2f} GiB",
            ),
            _core("kv_cache_utils.py:1229", f"GPU KV cache size: {tokens:,} tokens"),
            _core(
                "kv_cache_utils.py:1234",
                f"Maximum concurrency for {a.max_model_len:,} tokens per request: "
                f"{plan.max_concurrency(a.max_model_len or 1):.2f}x",
            ),
        ),
        gpu_bytes=plan.budget_bytes - plan.graph_bytes,
    )


def _graphs(ctx: StartupContext, t: float) -> StartupEvent:
    plan = ctx.plan
    assert plan is not None
    if ctx.args.enforce_eager:
        off = _rank0(ctx, "gpu_model_runner.py:4120", "Cudagraph is disabled under eager mode")
        return StartupEvent(t, "capturing_cuda_graphs", (off,), gpu_bytes=plan.budget_bytes)
    n = capture_sizes(ctx.args)
    bar = "100%|██████████|"
    mixed = f"Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): {bar} {n}/{n}"
    decode = f"Capturing CUDA graphs (decode, FULL): {bar} 35/35"
    capture_s = _CAPTURE_S * _time_factor(ctx)
    took = (
        f"Graph capturing finished in {capture_s:.0f} secs, took {plan.graph_bytes / GIB:.2f} GiB"
    )
    lines = (
        _rank0(ctx, "", mixed + " [00:03<00:00, 15.42it/s]"),
        _rank0(ctx, "", decode + " [00:02<00:00, 17.10it/s]"),
        _rank0(ctx, "gpu_model_runner.py:4185", took),
    )
    return StartupEvent(t, "capturing_cuda_graphs", lines, gpu_bytes=plan.budget_bytes)


def _engine_ready(ctx: StartupContext, t: float) -> StartupEvent:
    compile_s = _COMPILE_S * _time_factor(ctx)
    compile_note = "" if ctx.args.enforce_eager else f" (compilation: {compile_s:.2f} s)"
    return StartupEvent(
        t,
        "starting_api_server",
        (
            _core(
                "core.py:250",
                "init engine (profile, create kv cache, warmup model) took "
                f"{t:.2f} s{compile_note}",
            ),
            _api("api_server.py:1655", "Supported tasks: ['generate']"),
        ),
    )


def _api_routes(ctx: StartupContext, t: float) -> StartupEvent:
    a = ctx.args
    lines = []
    if ctx.dev_mode:
        lines.append(
            _api(
                "api_server.py:1705",
                "SECURITY WARNING: Development endpoints are enabled! "
                "This should not be used in production!",
            )
        )
    lines.append(_api("api_server.py:1880", f"Starting vLLM server on http://{a.host}:{a.port}"))
    lines.append(_api("launcher.py:34", "Available routes are:"))
    for route, methods in ROUTES:
        lines.append(_api("launcher.py:42", f"Route: {route}, Methods: {methods}"))
    return StartupEvent(t, "starting_api_server", tuple(lines))


def _serving(ctx: StartupContext, t: float) -> StartupEvent:
    return StartupEvent(
        t,
        "serving",
        (
            ("api", "", "", f"INFO:     Started server process [{ctx.pid}]"),
            ("api", "", "", "INFO:     Waiting for application startup."),
            ("api", "", "", "INFO:     Application startup complete."),
        ),
    )


ROUTES = (
    ("/health", "GET"),
    ("/load", "GET"),
    ("/ping", "GET, POST"),
    ("/version", "GET"),
    ("/metrics", "GET"),
    ("/v1/models", "GET"),
    ("/v1/chat/completions", "POST"),
    ("/v1/completions", "POST"),
    ("/tokenize", "POST"),
    ("/detokenize", "POST"),
)

# Durations at full scale for an 8B model on an H100 (reference §5), in seconds.
_LOAD_S = 6.0
_COMPILE_S = 20.0
_PROFILE_S = 1.5
_CAPTURE_S = 6.0

# (seconds until the next phase, builder); the log lines report the durations as simulated.
_PHASES = (
    (2.5, _process_start),
    (1.5, _config_resolved),
    (3.0, _engine_init),
    (_LOAD_S, _load_start),
    (0.5, _load_done),
    (_COMPILE_S, _compile),
    (_PROFILE_S, _profiled),
    (0.5, _kv_sized),
    (_CAPTURE_S, _graphs),
    (1.0, _engine_ready),
    (0.6, _api_routes),
    (0.0, _serving),
)


def _api(where: str, message: str) -> Line:
    return ("api", "INFO", where, message)


def _core(where: str, message: str) -> Line:
    return ("core", "INFO", where, message)


def _worker(rank: int, where: str, message: str) -> Line:
    return (f"worker:{rank}", "INFO", where, message)


def _rank0(ctx: StartupContext, where: str, message: str) -> Line:
    """Return a line from the process that runs the model: the EngineCore or TP rank 0."""
    proc = "worker:0" if ctx.args.tensor_parallel_size > 1 else "core"
    return (proc, "INFO" if where else "", where, message)
