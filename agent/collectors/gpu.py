"""Read every visible GPU through NVML, one Gpu per device.

`nvml` is any object with pynvml's names: the real `pynvml` module, or the simulator's
SimulatedNvml. Only these names are used: nvmlInit, nvmlShutdown, nvmlSystemGetDriverVersion,
nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetUUID, nvmlDeviceGetName,
nvmlDeviceGetMemoryInfo, nvmlDeviceGetUtilizationRates, nvmlDeviceGetTemperature,
nvmlDeviceGetPowerUsage, nvmlDeviceGetEnforcedPowerLimit, nvmlDeviceGetClockInfo,
nvmlDeviceGetCurrentClocksEventReasons (else nvmlDeviceGetCurrentClocksThrottleReasons),
nvmlDeviceGetTotalEccErrors, nvmlDeviceGetPcieReplayCounter,
nvmlDeviceGetComputeRunningProcesses; the constants NVML_TEMPERATURE_GPU, NVML_CLOCK_SM,
NVML_CLOCK_MEM, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
NVML_VOLATILE_ECC; and the exception NVMLError.

Every field is optional: containers and VMs answer NotSupported for some of them, and that
goes into `Gpu.missing[field]` without failing the GPU. The calls block, so the caller runs
`collect()` in a thread for real NVML.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from agent.checkpoint import THROTTLE_REASONS, Gpu, GpuProcess

log = logging.getLogger(__name__)

T = TypeVar("T")

INIT_RETRY_S = 60.0


class GpuCollector:
    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._initialized = False
        self._init_error: str | None = None
        self._init_tried_at: float | None = None

    def collect(self, now: float) -> tuple[list[Gpu], str | None]:
        """Return the GPUs, or an empty list and why there are none (monotonic `now`)."""
        if not self._ensure_initialized(now):
            return [], self._init_error
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
        except self._nvml.NVMLError as exc:
            return [], f"nvmlDeviceGetCount failed: {_reason(exc)}"
        return [read_gpu(self._nvml, index) for index in range(count)], None

    def close(self) -> None:
        if self._initialized:
            self._initialized = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                log.warning("nvmlShutdown failed: %s", _reason(exc))

    def _ensure_initialized(self, now: float) -> bool:
        # A failed nvmlInit is retried now and then (a driver can come back), not every time.
        if self._initialized:
            return True
        if self._init_tried_at is not None and now - self._init_tried_at < INIT_RETRY_S:
            return False
        self._init_tried_at = now
        try:
            self._nvml.nvmlInit()
        except (self._nvml.NVMLError, OSError) as exc:
            self._init_error = f"nvmlInit failed: {_reason(exc)}"
            log.warning("%s; GPU metrics are missing", self._init_error)
            return False
        self._initialized, self._init_error = True, None
        log.info("NVML initialized, driver %s", self._driver_version())
        return True

    def _driver_version(self) -> str:
        try:
            return _text(self._nvml.nvmlSystemGetDriverVersion())
        except self._nvml.NVMLError as exc:
            return f"unknown ({_reason(exc)})"


def read_gpu(nvml: Any, index: int) -> Gpu:
    """Return one GPU's readings; fields NVML refuses are named in `missing`."""
    gpu = Gpu(index=index)
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        gpu.missing["handle"] = _reason(exc)
        return gpu
    field = _FieldReader(nvml, gpu)
    gpu.uuid = field(("uuid",), lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
    gpu.name = field(("name",), lambda: _text(nvml.nvmlDeviceGetName(handle)))
    _read_memory(nvml, handle, field, gpu)
    _read_utilization(nvml, handle, field, gpu)
    _read_thermal_power_clocks(nvml, handle, field, gpu)
    gpu.throttle_reasons = field(("throttle_reasons",), lambda: _throttle(nvml, handle)) or []
    _read_errors(nvml, handle, field, gpu)
    gpu.processes = field(("processes",), lambda: _processes(nvml, handle)) or []
    return gpu


class _FieldReader:
    """Call one NVML getter; on NVMLError record it under the given field names."""

    def __init__(self, nvml: Any, gpu: Gpu) -> None:
        self._error: type[BaseException] = nvml.NVMLError
        self._gpu = gpu

    def __call__(self, fields: tuple[str, ...], read: Callable[[], T]) -> T | None:
        try:
            return read()
        except self._error as exc:
            for name in fields:
                self._gpu.missing[name] = _reason(exc)
            return None


def _read_memory(nvml: Any, handle: Any, field: _FieldReader, gpu: Gpu) -> None:
    memory = field(
        ("memory_used_bytes", "memory_total_bytes"), lambda: nvml.nvmlDeviceGetMemoryInfo(handle)
    )
    if memory is not None:
        gpu.memory_used_bytes = _nonneg(memory.used)
        gpu.memory_total_bytes = _nonneg(memory.total)


def _read_utilization(nvml: Any, handle: Any, field: _FieldReader, gpu: Gpu) -> None:
    rates = field(
        ("utilization_gpu_pct", "utilization_memory_pct"),
        lambda: nvml.nvmlDeviceGetUtilizationRates(handle),
    )
    if rates is not None:
        gpu.utilization_gpu_pct = _pct(rates.gpu)
        gpu.utilization_memory_pct = _pct(rates.memory)


def _read_thermal_power_clocks(nvml: Any, handle: Any, field: _FieldReader, gpu: Gpu) -> None:
    temperature = field(
        ("temperature_c",),
        lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
    )
    gpu.temperature_c = None if temperature is None else float(temperature)
    power_mw = field(("power_w",), lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    limit_mw = field(("power_limit_w",), lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    gpu.power_w = _milli(power_mw)
    gpu.power_limit_w = _milli(limit_mw)
    sm = field(("sm_clock_mhz",), lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))
    mem = field(
        ("mem_clock_mhz",), lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)
    )
    gpu.sm_clock_mhz = _nonneg(sm)
    gpu.mem_clock_mhz = _nonneg(mem)


def _read_errors(nvml: Any, handle: Any, field: _FieldReader, gpu: Gpu) -> None:
    def ecc(kind: int) -> int:
        return int(nvml.nvmlDeviceGetTotalEccErrors(handle, kind, nvml.NVML_VOLATILE_ECC))

    corrected = field(
        ("ecc_corrected_volatile",), lambda: ecc(nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED)
    )
    uncorrected = field(
        ("ecc_uncorrected_volatile",), lambda: ecc(nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)
    )
    replays = field(("pcie_replay_count",), lambda: nvml.nvmlDeviceGetPcieReplayCounter(handle))
    gpu.ecc_corrected_volatile = _count(corrected)
    gpu.ecc_uncorrected_volatile = _count(uncorrected)
    gpu.pcie_replay_count = _count(replays)


def _throttle(nvml: Any, handle: Any) -> list[str]:
    # The "clocks event" name replaced "throttle" in newer bindings and drivers, with the same
    # bits. Old bindings lack the attribute; old drivers answer FunctionNotFound.
    try:
        mask = int(nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
    except (AttributeError, nvml.NVMLError):
        mask = int(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def _processes(nvml: Any, handle: Any) -> list[GpuProcess]:
    processes = []
    for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
        # usedGpuMemory is None where NVML cannot see it (containers, some drivers).
        used = getattr(proc, "usedGpuMemory", None)
        processes.append(GpuProcess(pid=int(proc.pid), used_memory_bytes=_nonneg(used)))
    return processes


def _text(value: str | bytes) -> str:
    # Old bindings return bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _nonneg(value: float | None) -> float | None:
    return None if value is None or value < 0 else float(value)


def _pct(value: float | None) -> float | None:
    return None if value is None or value < 0 else min(float(value), 100.0)


def _milli(value: float | None) -> float | None:
    return None if value is None or value < 0 else value / 1000.0


def _count(value: int | None) -> int | None:
    return None if value is None or value < 0 else int(value)
