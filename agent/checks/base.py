"""What every check reads: the Context, the Machine it runs on, the NVML facts, and the verdicts.

A check is `def check(ctx: Context) -> ValidationCheck` and says pass, warn, fail or skip, with
the measured value, what would pass and a concrete fix. Machine bundles every place a check
reads the host from (paths and small functions), so tests point it at a fake /proc or a fake
disk the way prometheus_client's process collector is tested.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import re
import resource
import shutil
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from agent.checkpoint import Gpu, ValidationCheck
from agent.collectors.gpu import read_gpu
from agent.model_shape import (
    ModelDir,
    ModelShape,
    catalog_shape,
    find_model_dir,
    hf_cache_dir,
    read_config,
    shape_from_config,
    weight_files,
)
from agent.vllm_args import VllmCommand

GIB = 1024**3
MIB = 1024**2
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92  # vLLM's default since 2026-04 (reference §4)


class DiskSpace(NamedTuple):
    total: int
    used: int
    free: int


class TorchBuild(NamedTuple):
    version: str
    cuda: str | None  # None: a CPU-only build


def _disk_usage(path: Path) -> DiskSpace:
    usage = shutil.disk_usage(path)
    return DiskSpace(usage.total, usage.used, usage.free)


def _nofile_limits() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_requires(name: str) -> list[str]:
    try:
        return importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return []


def _which(program: str, path: str | None) -> str | None:
    return shutil.which(program, path=path)


def _torch_build() -> TorchBuild | None:
    """Return the installed torch and the CUDA it was built for, without importing it
    (importing torch takes seconds and initializes CUDA)."""
    try:
        dist = importlib.metadata.distribution("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    version_file = Path(str(dist.locate_file("torch/version.py")))
    try:
        text = version_file.read_text(encoding="utf-8")
    except OSError:
        return TorchBuild(dist.version, None)
    found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([\d.]+)['\"]", text, re.MULTILINE)
    return TorchBuild(dist.version, found.group(1) if found else None)


@dataclass(frozen=True, slots=True)
class Machine:
    """Where the checks read the host; every field can be replaced by a test."""

    proc: Path = Path("/proc")
    etc: Path = Path("/etc")
    net: Path = Path("/sys/class/net")
    shm: Path = Path("/dev/shm")
    home: Path = field(default_factory=Path.home)
    platform: str = sys.platform
    disk_usage: Callable[[Path], DiskSpace] = _disk_usage
    nofile_limits: Callable[[], tuple[int, int]] = _nofile_limits  # (soft, hard)
    package_version: Callable[[str], str | None] = _package_version
    package_requires: Callable[[str], list[str]] = _package_requires
    torch_build: Callable[[], TorchBuild | None] = _torch_build
    which: Callable[[str, str | None], str | None] = _which  # (program, PATH)


# ---------------------------------------------------------------------------- NVML facts


@dataclass(frozen=True, slots=True)
class GpuProcessInfo:
    pid: int
    name: str | None
    used_bytes: int | None


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str | None
    total_bytes: int
    free_bytes: int
    processes: tuple[GpuProcessInfo, ...]
    health: Gpu  # the collector's full reading: ECC, remapped rows, lost, ...


@dataclass(frozen=True, slots=True)
class NvmlFacts:
    """What NVML said, gathered once; `error` says why there is nothing."""

    error: str | None = None
    driver: str | None = None
    cuda_driver: int | None = None  # e.g. 12080 for CUDA 12.8
    gpus: tuple[GpuInfo, ...] = ()


def gather_nvml(nvml: Any | None) -> NvmlFacts:
    """Return the driver and every GPU's memory, processes and health; never raises."""
    if nvml is None:
        return NvmlFacts(error="no NVML given (GPU checks are off)")
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError, or OSError when the library is missing
        return NvmlFacts(error=f"NVML cannot start: {_reason(exc)} (no NVIDIA driver here?)")
    try:
        return NvmlFacts(
            driver=_optional(nvml, lambda: _text(nvml.nvmlSystemGetDriverVersion())),
            cuda_driver=_optional(nvml, lambda: int(nvml.nvmlSystemGetCudaDriverVersion())),
            gpus=tuple(_gpu_info(nvml, i) for i in range(int(nvml.nvmlDeviceGetCount()))),
        )
    except nvml.NVMLError as exc:
        return NvmlFacts(error=f"NVML failed: {_reason(exc)}")
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _gpu_info(nvml: Any, index: int) -> GpuInfo:
    health = read_gpu(nvml, index)
    processes = tuple(
        GpuProcessInfo(
            p.pid,
            _process_name(nvml, p.pid),
            None if p.used_memory_bytes is None else int(p.used_memory_bytes),
        )
        for p in health.processes
    )
    total = int(health.memory_total_bytes or 0)
    return GpuInfo(index, health.name, total, _free_bytes(nvml, index, health), processes, health)


def _free_bytes(nvml: Any, index: int, health: Gpu) -> int:
    # NVML's own "free" (total - used - reserved), as close as NVML gets to what vLLM's
    # startup check reads from CUDA.
    if health.lost or not health.memory_total_bytes:
        return 0
    try:
        return int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).free)
    except nvml.NVMLError:
        return int(health.memory_total_bytes - (health.memory_used_bytes or 0))


def _process_name(nvml: Any, pid: int) -> str | None:
    try:
        return _text(nvml.nvmlSystemGetProcessName(pid))
    except nvml.NVMLError:
        return None


def _optional(nvml: Any, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except nvml.NVMLError:
        return None


# ---------------------------------------------------------------------------- the context


@dataclass(frozen=True, slots=True)
class ModelLookup:
    shape: ModelShape | None
    folder: ModelDir | None
    reason: str  # why there is no shape, or where it came from


@dataclass
class Context:
    command: VllmCommand | None
    vllm_url: str
    environ: Mapping[str, str]
    machine: Machine
    nvml: NvmlFacts
    own_pids: Collection[int] = ()  # the vLLM processes the agent runs: their memory is freed

    def arg(self, name: str, default: Any = None) -> Any:
        return default if self.command is None else self.command.get(name, default)

    @property
    def tensor_parallel(self) -> int:
        return int(self.arg("tensor_parallel_size", 1) or 1)

    @property
    def pipeline_parallel(self) -> int:
        return int(self.arg("pipeline_parallel_size", 1) or 1)

    @property
    def data_parallel_local(self) -> int:
        local = self.arg("data_parallel_size_local")
        return int(local if local is not None else self.arg("data_parallel_size", 1) or 1)

    @property
    def world_size(self) -> int:
        """Return the GPUs vLLM needs on this host: tensor x pipeline x local data parallel."""
        return self.tensor_parallel * self.pipeline_parallel * self.data_parallel_local

    @property
    def gpu_memory_utilization(self) -> float:
        return float(self.arg("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION))

    @functools.cached_property
    def visible_gpus(self) -> list[GpuInfo]:
        """Return the GPUs CUDA will show vLLM, in CUDA's order (CUDA_VISIBLE_DEVICES)."""
        return visible_gpus(self.nvml.gpus, self.environ.get("CUDA_VISIBLE_DEVICES"))

    @property
    def used_gpus(self) -> list[GpuInfo]:
        return self.visible_gpus[: self.world_size]

    @functools.cached_property
    def model(self) -> ModelLookup:
        return look_up_model(self)


def visible_gpus(gpus: tuple[GpuInfo, ...], setting: str | None) -> list[GpuInfo]:
    """Return `gpus` as CUDA_VISIBLE_DEVICES=`setting` selects them: by index or UUID prefix,
    stopping at the first entry that matches nothing (as CUDA does)."""
    if setting is None:
        return list(gpus)
    chosen = []
    for entry in (e.strip() for e in setting.split(",")):
        match = next((g for g in gpus if _matches(g, entry)), None)
        if match is None:
            break
        chosen.append(match)
    return chosen


def _matches(gpu: GpuInfo, entry: str) -> bool:
    if entry.isdigit():
        return gpu.index == int(entry)
    uuid = gpu.health.uuid or ""
    return bool(entry) and entry.startswith("GPU-") and uuid.startswith(entry)


def look_up_model(ctx: Context) -> ModelLookup:
    """Return the model's shape from its folder on disk, else from the catalog."""
    model = ctx.command.model if ctx.command is not None else None
    if not model:
        return ModelLookup(None, None, "no model in the command")
    cache = hf_cache_dir(ctx.environ, home_of(ctx), ctx.arg("download_dir"))
    folder = find_model_dir(model, cache, ctx.arg("revision"))
    if folder is not None:
        try:
            files = weight_files(folder.path)
            weights = files.weights_bytes or None
            source = f"config.json and weight headers in the {folder.how} {folder.path}"
            return ModelLookup(
                shape_from_config(model, read_config(folder.path), source, weights),
                folder,
                source,
            )
        except ValueError as exc:
            return ModelLookup(catalog_shape(model, ctx.arg("quantization")), folder, str(exc))
    shape = catalog_shape(model, ctx.arg("quantization"))
    if shape is not None:
        return ModelLookup(shape, None, shape.source)
    return ModelLookup(None, None, f"{model} is not on disk ({cache}) nor in the catalog")


def home_of(ctx: Context) -> Path:
    """Return the home folder of the environment vLLM runs with (its caches live there)."""
    home = ctx.environ.get("HOME")
    return Path(home) if home else ctx.machine.home


# ---------------------------------------------------------------------------- verdicts


def check(name: str, status: str, message: str, **details: Any) -> ValidationCheck:
    return ValidationCheck(name=name, status=status, message=message, **details)


def passed(name: str, message: str, **details: Any) -> ValidationCheck:
    return check(name, "pass", message, **details)


def warned(name: str, message: str, **details: Any) -> ValidationCheck:
    return check(name, "warn", message, **details)


def failed(name: str, message: str, **details: Any) -> ValidationCheck:
    return check(name, "fail", message, **details)


def skipped(name: str, message: str, **details: Any) -> ValidationCheck:
    return check(name, "skip", message, **details)


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def nearest_existing(path: Path) -> Path:
    """Return `path` or its closest existing parent (a cache folder not created yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def env_path(environ: Mapping[str, str]) -> str | None:
    return environ.get("PATH", os.environ.get("PATH"))


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
