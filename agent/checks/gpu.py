"""Checks of the GPUs through NVML: driver and CUDA, count, free memory, health."""

from __future__ import annotations

import math

from agent.checkpoint import ValidationCheck
from agent.checks.base import (
    Context,
    GpuInfo,
    failed,
    gib,
    passed,
    skipped,
    warned,
)

MIN_SUGGESTED_UTILIZATION = 0.3  # below this a lowered utilization leaves no room for a model
UTILIZATION_MARGIN = 0.01  # free memory moves a little between this check and vLLM's own


def check_driver(ctx: Context) -> ValidationCheck:
    """The NVIDIA driver and the newest CUDA it supports."""
    facts = ctx.nvml
    if facts.error is not None:
        return skipped("nvidia_driver", facts.error)
    value = f"driver {facts.driver or '?'}, CUDA {_cuda(facts.cuda_driver)}"
    return passed("nvidia_driver", f"NVIDIA {value}, {len(facts.gpus)} GPU(s)", value=value)


def check_cuda_compat(ctx: Context) -> ValidationCheck:
    """torch's CUDA build must not be newer than the CUDA the driver supports."""
    torch = ctx.machine.torch_build()
    if torch is None:
        return skipped(
            "cuda_compatibility",
            "torch is not installed in this Python environment, "
            "so the CUDA version vLLM will use is unknown here",
        )
    if torch.cuda is None:
        return failed(
            "cuda_compatibility",
            f"torch {torch.version} is a CPU-only build: vLLM needs a CUDA build",
            value=f"torch {torch.version} (CPU)",
            expected="a CUDA build of torch",
            fix="install the CUDA build of torch "
            "that your vLLM version pins (pip install vllm pulls it)",
        )
    if ctx.nvml.error is not None or ctx.nvml.cuda_driver is None:
        why = ctx.nvml.error or "NVML did not report the driver's CUDA version"
        return skipped(
            "cuda_compatibility",
            f"torch {torch.version} is built for CUDA "
            f"{torch.cuda}; the driver's CUDA is unknown: {why}",
            value=f"torch CUDA {torch.cuda}",
        )
    return _compare_cuda(torch.version, torch.cuda, ctx.nvml.cuda_driver)


def _compare_cuda(torch_version: str, torch_cuda: str, driver_cuda: int) -> ValidationCheck:
    built = _version_tuple(torch_cuda)
    supported = (driver_cuda // 1000, driver_cuda % 1000 // 10)
    value = f"torch {torch_version} built for CUDA {torch_cuda}; driver supports CUDA " + _cuda(
        driver_cuda
    )
    expected = f"driver CUDA >= {torch_cuda}"
    fix = f"install an NVIDIA driver that supports CUDA {torch_cuda}, or a torch/vLLM build "
    fix += f"for CUDA {_cuda(driver_cuda)}"
    if built[0] > supported[0]:
        return failed(
            "cuda_compatibility",
            "the driver is too old for torch's CUDA: CUDA initialization will fail",
            value=value,
            expected=expected,
            fix=fix,
        )
    if built > supported:
        return warned(
            "cuda_compatibility",
            "the driver supports an older CUDA minor version: "
            "minor-version compatibility runs most kernels, but PTX JIT may fail",
            value=value,
            expected=expected,
            fix=fix,
        )
    return passed("cuda_compatibility", value, value=value, expected=expected)


def check_gpu_count(ctx: Context) -> ValidationCheck:
    """Enough visible GPUs for tensor x pipeline (x local data) parallelism."""
    if ctx.command is None:
        return skipped("gpu_count", "no vLLM command: nothing to compare the GPUs against")
    if ctx.nvml.error is not None:
        return skipped("gpu_count", ctx.nvml.error, expected=f"{ctx.world_size} GPU(s)")
    visible, needed = len(ctx.visible_gpus), ctx.world_size
    setting = ctx.environ.get("CUDA_VISIBLE_DEVICES")
    value = f"{visible} visible" + (f" (CUDA_VISIBLE_DEVICES={setting})" if setting else "")
    parts = f"tensor {ctx.tensor_parallel} x pipeline {ctx.pipeline_parallel}"
    if ctx.data_parallel_local > 1:
        parts += f" x data {ctx.data_parallel_local}"
    expected = f">= {needed} ({parts})"
    heads = _heads_problem(ctx)
    if heads is not None:
        return failed(
            "gpu_count",
            heads,
            value=value,
            expected=expected,
            fix="choose a --tensor-parallel-size that divides the attention heads",
        )
    if visible >= needed:
        return passed("gpu_count", f"{value}; vLLM needs {needed}", value=value, expected=expected)
    if ctx.arg("distributed_executor_backend") == "ray":
        return warned(
            "gpu_count",
            f"only {visible} GPU(s) here: with Ray the rest must be on other nodes of the cluster",
            value=value,
            expected=expected,
        )
    return _too_few_gpus(ctx, visible, value, expected)


def _too_few_gpus(ctx: Context, visible: int, value: str, expected: str) -> ValidationCheck:
    fix = "make more GPUs visible (CUDA_VISIBLE_DEVICES) or lower --tensor-parallel-size"
    details: dict[str, object] = {}
    smaller = _smaller_tp(ctx, visible)
    if smaller is not None:
        fix = (
            f"lower --tensor-parallel-size to {smaller} (each GPU then holds "
            f"{ctx.tensor_parallel // smaller}x more of the model), or make more GPUs visible"
        )
        details = {
            "fix_action": "restart_with_args",
            "fix_params": {"tensor_parallel_size": smaller},
        }
    return failed(
        "gpu_count",
        f"vLLM needs {ctx.world_size} GPUs and only {visible} are "
        "visible: it would fail at startup",
        value=value,
        expected=expected,
        fix=fix,
        **details,
    )


def _smaller_tp(ctx: Context, visible: int) -> int | None:
    """Return the largest power-of-two TP that fits the visible GPUs (and divides the heads)."""
    room = visible // (ctx.pipeline_parallel * ctx.data_parallel_local)
    if room < 1:
        return None
    shape = ctx.model.shape
    tp = 2 ** int(math.log2(room))
    while tp > 1 and shape is not None and shape.attention_heads % tp:
        tp //= 2
    return tp if tp < ctx.tensor_parallel else None


def _heads_problem(ctx: Context) -> str | None:
    shape = ctx.model.shape
    if shape is None or shape.attention_heads % ctx.tensor_parallel == 0:
        return None
    return (
        f"{shape.name} has {shape.attention_heads} attention heads, not divisible by "
        f"--tensor-parallel-size {ctx.tensor_parallel}: vLLM refuses to start"
    )


def check_gpu_free_memory(ctx: Context) -> ValidationCheck:
    """Each GPU vLLM will use must have gpu_memory_utilization x total free (vLLM's own check)."""
    if ctx.command is None:
        return skipped("gpu_free_memory", "no vLLM command: vLLM already holds its memory")
    if ctx.nvml.error is not None:
        return skipped("gpu_free_memory", ctx.nvml.error)
    gpus = ctx.used_gpus
    if not gpus:
        return skipped("gpu_free_memory", "no visible GPU to check")
    util = ctx.gpu_memory_utilization
    short = [g for g in gpus if _free_for_vllm(ctx, g) < util * g.total_bytes]
    worst = min(gpus, key=lambda g: _free_for_vllm(ctx, g) / max(g.total_bytes, 1))
    value = _memory_value(ctx, worst)
    expected = f">= {gib(util * worst.total_bytes)} ({util} x total)"
    if short:
        return _short_of_memory(ctx, short, worst, value, expected)
    foreign = _foreign(ctx, gpus)
    if foreign:
        return warned(
            "gpu_free_memory",
            f"enough free memory, but other processes use the "
            f"GPUs: {foreign}; if they grow, vLLM runs out of memory",
            value=value,
            expected=expected,
            fix=f"move the other processes off vLLM's GPUs ({foreign})",
        )
    return passed(
        "gpu_free_memory",
        f"every GPU vLLM uses has enough free memory; the tightest: {value}",
        value=value,
        expected=expected,
    )


def _short_of_memory(
    ctx: Context, short: list[GpuInfo], worst: GpuInfo, value: str, expected: str
) -> ValidationCheck:
    names = ", ".join(str(g.index) for g in short)
    message = (
        f"free memory on GPU {names} is below gpu_memory_utilization x total: vLLM "
        "would fail with 'Free memory on device ... is less than desired GPU memory "
        "utilization'"
    )
    foreign = _foreign(ctx, short)
    lowered = math.floor(
        (_free_for_vllm(ctx, worst) / worst.total_bytes - UTILIZATION_MARGIN) * 100
    )
    lowered_util = lowered / 100
    fix = f"stop the processes holding GPU memory ({foreign})" if foreign else "free GPU memory"
    details: dict[str, object] = {}
    if lowered_util >= MIN_SUGGESTED_UTILIZATION:
        fix += f", or lower --gpu-memory-utilization to {lowered_util} (a smaller KV cache)"
        details = {
            "fix_action": "restart_with_args",
            "fix_params": {"gpu_memory_utilization": lowered_util},
        }
    return failed("gpu_free_memory", message, value=value, expected=expected, fix=fix, **details)


def _free_for_vllm(ctx: Context, gpu: GpuInfo) -> int:
    # Memory held by the vLLM the agent runs comes back when it restarts.
    own = sum(p.used_bytes or 0 for p in gpu.processes if p.pid in ctx.own_pids)
    return gpu.free_bytes + own


def _memory_value(ctx: Context, gpu: GpuInfo) -> str:
    return f"GPU {gpu.index}: {gib(_free_for_vllm(ctx, gpu))} free of {gib(gpu.total_bytes)}"


def _foreign(ctx: Context, gpus: list[GpuInfo]) -> str:
    """Return the other processes on `gpus`, e.g. "pid 48213 (python3, 5.50 GiB) on GPU 0"."""
    found = []
    for gpu in gpus:
        for p in gpu.processes:
            if p.pid in ctx.own_pids:
                continue
            used = "" if p.used_bytes is None else f", {gib(p.used_bytes)}"
            found.append(f"pid {p.pid} ({p.name or '?'}{used}) on GPU {gpu.index}")
    return "; ".join(found)


def check_gpu_health(ctx: Context) -> ValidationCheck:
    """A GPU off the bus, with a failed or pending row remap, or fresh DBEs should not serve."""
    if ctx.nvml.error is not None:
        return skipped("gpu_health", ctx.nvml.error)
    gpus = ctx.used_gpus if ctx.command is not None else ctx.visible_gpus
    if not gpus:
        return skipped("gpu_health", "no visible GPU to check")
    fatal, worrying = _health_findings(gpus)
    checked = f"{len(gpus)} GPU(s) checked"
    if fatal:
        return failed(
            "gpu_health",
            "; ".join(fatal + worrying),
            value=checked,
            expected="no lost GPU, no remap failure",
            fix="drain the host; reboot the node (lost GPU) or replace the GPU (remap failure)",
        )
    if worrying:
        return warned(
            "gpu_health",
            "; ".join(worrying),
            value=checked,
            expected="no pending remaps or uncorrected errors",
            fix="reset the GPU (nvidia-smi -r) before starting vLLM",
        )
    return passed(
        "gpu_health", f"{checked}: no lost GPU, pending remap or uncorrected error", value=checked
    )


def _health_findings(gpus: list[GpuInfo]) -> tuple[list[str], list[str]]:
    """Return what rules a GPU out (lost, remap failed) and what calls for a reset first."""
    fatal, worrying = [], []
    for gpu in gpus:
        h, name = gpu.health, f"GPU {gpu.index}"
        fatal += [f"{name} has fallen off the bus"] if h.lost else []
        fatal += [f"{name}: row remapping failed"] if h.remapped_rows_failure else []
        worrying += [f"{name}: remapped rows pending"] if h.remapped_rows_pending else []
        worrying += [f"{name}: retired pages pending"] if h.retired_pages_pending else []
        if h.ecc_uncorrected_volatile:
            errors = h.ecc_uncorrected_volatile
            worrying.append(f"{name}: {errors} uncorrected ECC errors since the driver loaded")
    return fatal, worrying


def _cuda(encoded: int | None) -> str:
    if encoded is None:
        return "?"
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor, *_ = [*(int(p) for p in version.split(".") if p.isdigit()), 0, 0]
    return major, minor
