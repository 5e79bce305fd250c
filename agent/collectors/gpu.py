"""Read every visible GPU through NVML, one Gpu per device.

`nvml` is any object with pynvml's names: the real `pynvml` module, or the simulator's
SimulatedNvml. Only these names are used: nvmlInit, nvmlShutdown, nvmlSystemGetDriverVersion,
nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetUUID, nvmlDeviceGetName,
nvmlDeviceGetMemoryInfo, nvmlDeviceGetUtilizationRates, nvmlDeviceGetTemperature,
nvmlDeviceGetPowerUsage, nvmlDeviceGetEnforcedPowerLimit, nvmlDeviceGetClockInfo,
nvmlDeviceGetCurrentClocksEventReasons (else nvmlDeviceGetCurrentClocksThrottleReasons),
nvmlDeviceGetTotalEccErrors, nvmlDeviceGetRetiredPages, nvmlDeviceGetRetiredPagesPendingStatus,
nvmlDeviceGetRemappedRows, nvmlDeviceGetPcieReplayCounter,
nvmlDeviceGetComputeRunningProcesses; the constants NVML_TEMPERATURE_GPU, NVML_CLOCK_SM,
NVML_CLOCK_MEM, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC, NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR; and the exception NVMLError.

Every field is optional: containers and VMs answer NotSupported for some of them, and that
goes into `Gpu.missing[field]` without failing the GPU. Page retirement exists before Ampere
and row remapping from Ampere on, so every GPU answers NotSupported to one of them; a getter
that answered NotSupported is not asked again (it will not change while the driver runs).

A GPU that has fallen off the bus answers GPU_IS_LOST: it is reported with `lost=True` and no
further call is made to it, since each call to a lost GPU can block for long. A GPU that
disappears from nvmlDeviceGetCount is reported as lost too, under its last index and UUID.
The calls block, so the caller runs `collect()` in a thread for real NVML.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.checkpoint import THROTTLE_REASONS, Gpu, GpuProcess

log = logging.getLogger(__name__)

T = TypeVar("T")

INIT_RETRY_S = 60.0
# nvml.h return codes: part of NVML's C ABI, the same in every binding.
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
GONE_FROM_COUNT = "no longer listed by nvmlDeviceGetCount"


@dataclass(frozen=True, slots=True)
class _Seen:
    """A GPU as last read while it answered, to name it once it is lost."""

    index: int
    uuid: str | None
    name: str | None


class GpuCollector:
    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._initialized = False
        self._init_error: str | None = None
        self._init_tried_at: float | None = None
        self._count: int | None = None
        self._unsupported: dict[int, dict[str, str]] = {}  # index -> field -> NVML's answer
        self._seen: dict[str, _Seen] = {}  # _key(gpu) -> identity

    def collect(self, now: float) -> tuple[list[Gpu], str | None]:
        """Return the GPUs, or an empty list and why there are none (monotonic `now`)."""
        if not self._ensure_initialized(now):
            return [], self._init_error
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
        except self._nvml.NVMLError as exc:
            return [], f"nvmlDeviceGetCount failed: {_reason(exc)}"
        if count != self._count:
            # Indices may now name other devices: what they did not support says nothing.
            self._count = count
            self._unsupported.clear()
        gpus = [self._read(index) for index in range(count)]
        return gpus + self._gone(gpus), None

    def close(self) -> None:
        if self._initialized:
            self._initialized = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                log.warning("nvmlShutdown failed: %s", _reason(exc))

    def _read(self, index: int) -> Gpu:
        gpu = read_gpu(self._nvml, index, self._unsupported.setdefault(index, {}))
        if gpu.lost and gpu.uuid is None:
            seen = next((s for s in self._seen.values() if s.index == index), None)
            if seen is not None:
                gpu.uuid, gpu.name = seen.uuid, seen.name
        elif not gpu.lost:
            self._seen[_key(gpu)] = _Seen(index, gpu.uuid, gpu.name)
        return gpu

    def _gone(self, gpus: list[Gpu]) -> list[Gpu]:
        """Return the GPUs seen before that NVML no longer lists, as lost."""
        present = {_key(g) for g in gpus}
        return [
            Gpu(
                index=s.index,
                uuid=s.uuid,
                name=s.name,
                lost=True,
                missing={"device": GONE_FROM_COUNT},
            )
            for key, s in self._seen.items()
            if key not in present
        ]

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


def read_gpu(nvml: Any, index: int, unsupported: dict[str, str] | None = None) -> Gpu:
    """Return one GPU's readings; fields NVML refuses are named in `missing`.

    `unsupported` (field -> NVML's answer) is filled with the fields that answered
    NotSupported, and those are not asked again when the same dict is passed next time.
    """
    gpu = Gpu(index=index)
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        gpu.missing["handle"] = _reason(exc)
        gpu.lost = _is_lost(exc)
        return gpu
    field = _FieldReader(nvml, gpu, {} if unsupported is None else unsupported)
    gpu.uuid = field(("uuid",), lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
    gpu.name = field(("name",), lambda: _text(nvml.nvmlDeviceGetName(handle)))
    _read_memory(nvml, handle, field, gpu)
    _read_utilization(nvml, handle, field, gpu)
    _read_thermal_power_clocks(nvml, handle, field, gpu)
    gpu.throttle_reasons = field(("throttle_reasons",), lambda: _throttle(nvml, handle)) or []
    _read_errors(nvml, handle, field, gpu)
    _read_memory_health(nvml, handle, field, gpu)
    gpu.processes = field(("processes",), lambda: _processes(nvml, handle)) or []
    return gpu


class _FieldReader:
    """Call one NVML getter; on NVMLError record it under the given field names.

    After GPU_IS_LOST the GPU is marked lost and nothing more is asked of it.
    """

    def __init__(self, nvml: Any, gpu: Gpu, unsupported: dict[str, str]) -> None:
        self._error: type[BaseException] = nvml.NVMLError
        self._gpu = gpu
        self._unsupported = unsupported
        self._lost_reason: str | None = None

    def __call__(self, fields: tuple[str, ...], read: Callable[[], T]) -> T | None:
        known = self._lost_reason or self._unsupported.get(fields[0])
        if known is not None:
            self._record(fields, known)
            return None
        try:
            return read()
        except self._error as exc:
            reason = _reason(exc)
            self._record(fields, reason)
            if _is_lost(exc):
                self._gpu.lost, self._lost_reason = True, reason
            elif getattr(exc, "value", None) == NVML_ERROR_NOT_SUPPORTED:
                self._unsupported[fields[0]] = reason
            return None

    def _record(self, fields: tuple[str, ...], reason: str) -> None:
        for name in fields:
            self._gpu.missing[name] = reason


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
    def ecc(kind: int, counter: int) -> int:
        return int(nvml.nvmlDeviceGetTotalEccErrors(handle, kind, counter))

    corrected, uncorrected = (
        nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
        nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    )
    volatile, aggregate = nvml.NVML_VOLATILE_ECC, nvml.NVML_AGGREGATE_ECC
    gpu.ecc_corrected_volatile = _count(
        field(("ecc_corrected_volatile",), lambda: ecc(corrected, volatile))
    )
    gpu.ecc_uncorrected_volatile = _count(
        field(("ecc_uncorrected_volatile",), lambda: ecc(uncorrected, volatile))
    )
    gpu.ecc_corrected_aggregate = _count(
        field(("ecc_corrected_aggregate",), lambda: ecc(corrected, aggregate))
    )
    gpu.ecc_uncorrected_aggregate = _count(
        field(("ecc_uncorrected_aggregate",), lambda: ecc(uncorrected, aggregate))
    )
    replays = field(("pcie_replay_count",), lambda: nvml.nvmlDeviceGetPcieReplayCounter(handle))
    gpu.pcie_replay_count = _count(replays)


def _read_memory_health(nvml: Any, handle: Any, field: _FieldReader, gpu: Gpu) -> None:
    """Read page retirement (before Ampere) and row remapping (Ampere and later)."""

    def retired(cause: int) -> int:
        return len(nvml.nvmlDeviceGetRetiredPages(handle, cause))

    sbe = nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
    dbe = nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
    gpu.retired_pages_sbe = field(("retired_pages_sbe",), lambda: retired(sbe))
    gpu.retired_pages_dbe = field(("retired_pages_dbe",), lambda: retired(dbe))
    pending = field(
        ("retired_pages_pending",), lambda: nvml.nvmlDeviceGetRetiredPagesPendingStatus(handle)
    )
    gpu.retired_pages_pending = None if pending is None else bool(pending)
    names = (
        "remapped_rows_corrected",
        "remapped_rows_uncorrected",
        "remapped_rows_pending",
        "remapped_rows_failure",
    )
    rows = field(names, lambda: nvml.nvmlDeviceGetRemappedRows(handle))
    if rows is not None:
        corrected, uncorrected, is_pending, failed = rows
        gpu.remapped_rows_corrected = _count(corrected)
        gpu.remapped_rows_uncorrected = _count(uncorrected)
        gpu.remapped_rows_pending = bool(is_pending)
        gpu.remapped_rows_failure = bool(failed)


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


def _key(gpu: Gpu) -> str:
    # The UUID survives renumbering; without one, the index is all there is.
    return gpu.uuid or f"index:{gpu.index}"


def _is_lost(exc: BaseException) -> bool:
    return getattr(exc, "value", None) == NVML_ERROR_GPU_IS_LOST


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
