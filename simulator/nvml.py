"""A stand-in for `pynvml` over simulated GPUs, for machines without one.

`SimulatedNvml` offers the pynvml functions the agent calls, under the same names, with the
same return shapes (pynvml's own structs) and the same exceptions (`pynvml.NVMLError_*`), so
the agent's NVML collector, XID watcher and validator run unchanged against it. With no
arguments it is one idle H100 80GB; the simulated fleet passes the GPUs its engines drive.

GPU health is injected with `apply_event(kind, params)` (the scenario effects `xid`,
`row_remap`, `retired_pages`, `gpu_lost`) or `inject_event()`. Event sets are real blocking
waits: `nvmlEventSetWait_v2` sleeps on a condition until an event is injected or the timeout
passes (then it raises `pynvml.NVMLError_Timeout`), so a watcher thread behaves as with NVML.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pynvml

from simulator.catalog import DEFAULT_GPU, gpu_spec
from simulator.gpu import (
    EVENT_DRAM_RETIREMENT,
    EVENT_DRAM_RETIREMENT_FAILURE,
    EVENT_XID,
    GpuState,
)
from simulator.scenario import GPU_HEALTH_KINDS

DRIVER_VERSION = "570.172.08"
CUDA_DRIVER_VERSION = 12080  # what an R570 driver supports: CUDA 12.8, as NVML encodes it
_PAGE_BYTES = 64 * 1024  # spacing of the fake retired-page addresses

# The same values as pynvml's, re-exported so callers can use `nvml.NVML_CLOCK_SM`.
NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
NVML_MEMORY_ERROR_TYPE_CORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
NVML_VOLATILE_ECC = pynvml.NVML_VOLATILE_ECC
NVML_AGGREGATE_ECC = pynvml.NVML_AGGREGATE_ECC
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = (
    pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
)
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = (
    pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
)

NVMLError = pynvml.NVMLError
NVMLError_NotSupported = pynvml.NVMLError_NotSupported
NVMLError_InvalidArgument = pynvml.NVMLError_InvalidArgument
NVMLError_Uninitialized = pynvml.NVMLError_Uninitialized


def idle_gpu(index: int = 0, gpu_name: str = DEFAULT_GPU) -> GpuState:
    """Return a GPU with nothing running on it."""
    return GpuState(
        index=index,
        spec=gpu_spec(gpu_name),
        uuid=f"GPU-5e1a7c00-0000-4000-8000-{index:012d}",
        serial=f"165232{index:07d}",
    )


@dataclass(slots=True)
class SimulatedEventSet:
    """What nvmlEventSetCreate returns: per GPU the registered mask, and how far it has read."""

    masks: dict[int, int] = field(default_factory=dict)  # id(GpuState) -> registered mask
    since: dict[int, int] = field(default_factory=dict)  # id(GpuState) -> stream position
    read: int = 0  # events of the stream already looked at
    freed: bool = False


class SimulatedNvml:
    """pynvml's calls over `gpus`; handles are the GpuState objects themselves."""

    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM
    NVML_MEMORY_ERROR_TYPE_CORRECTED = NVML_MEMORY_ERROR_TYPE_CORRECTED
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC = NVML_VOLATILE_ECC
    NVML_AGGREGATE_ECC = NVML_AGGREGATE_ECC
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = (
        NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
    )
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = (
        NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
    )
    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_Timeout = pynvml.NVMLError_Timeout
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost

    def __init__(
        self,
        gpus: Sequence[GpuState] | None = None,
        driver_version: str = DRIVER_VERSION,
        cuda_driver_version: int = CUDA_DRIVER_VERSION,
    ) -> None:
        self.gpus = list(gpus) if gpus is not None else [idle_gpu()]
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self._init_count = 0
        # Every NVML event of every GPU, in arrival order: (GPU, eventType, eventData).
        self._stream: list[tuple[GpuState, int, int]] = []
        # Guards the stream and the event sets: a watcher waits on them in its own thread.
        self._events_changed = threading.Condition()

    def nvmlInit(self) -> None:
        self._init_count += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self._init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check()
        return self.cuda_driver_version

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._check()
        for gpu in self.gpus:
            for process in gpu.processes:
                if process.pid == pid:
                    return process.name
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self._listed())

    def nvmlDeviceGetHandleByIndex(self, index: int) -> GpuState:
        self._check()
        listed = self._listed()
        if not 0 <= index < len(listed):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return listed[index]

    def nvmlDeviceGetUUID(self, handle: GpuState) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: GpuState) -> str:
        return self._gpu(handle).spec.name

    def nvmlDeviceGetMemoryInfo(
        self, handle: GpuState, version: int | None = None
    ) -> pynvml.c_nvmlMemory_t:
        gpu = self._gpu(handle)
        used = min(gpu.memory_used_bytes, gpu.memory_total_bytes)
        return pynvml.c_nvmlMemory_t(
            total=gpu.memory_total_bytes, free=gpu.memory_total_bytes - used, used=used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: GpuState) -> pynvml.c_nvmlUtilization_t:
        gpu = self._gpu(handle)
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization_gpu, memory=gpu.utilization_memory)

    def nvmlDeviceGetTemperature(self, handle: GpuState, sensor: int) -> int:
        gpu = self._gpu(handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return round(gpu.temperature_c)

    def nvmlDeviceGetPowerUsage(self, handle: GpuState) -> int:
        return self._gpu(handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: GpuState) -> int:
        return int(self._gpu(handle).spec.power_limit_w * 1000)

    def nvmlDeviceGetClockInfo(self, handle: GpuState, clock_type: int) -> int:
        gpu = self._gpu(handle)
        if clock_type == NVML_CLOCK_SM:
            return gpu.sm_clock_mhz
        if clock_type == NVML_CLOCK_MEM:
            return gpu.mem_clock_mhz
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: GpuState) -> int:
        return self._gpu(handle).clocks_event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: GpuState) -> int:
        return self._gpu(handle).clocks_event_reasons

    def nvmlDeviceGetTotalEccErrors(
        self, handle: GpuState, error_type: int, counter_type: int
    ) -> int:
        gpu = self._gpu(handle)
        if counter_type not in (NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if error_type == NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return int(gpu.ecc_corrected)
        if error_type == NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return gpu.ecc_uncorrected
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetPcieReplayCounter(self, handle: GpuState) -> int:
        return int(self._gpu(handle).pcie_replays)

    def nvmlDeviceGetComputeRunningProcesses(
        self, handle: GpuState
    ) -> list[pynvml.nvmlFriendlyObject]:
        gpu = self._gpu(handle)
        return [
            pynvml.nvmlFriendlyObject(
                {
                    "pid": p.pid,
                    "usedGpuMemory": p.used_bytes,
                    "gpuInstanceId": 0xFFFFFFFF,
                    "computeInstanceId": 0xFFFFFFFF,
                }
            )
            for p in gpu.processes
        ]

    def nvmlDeviceGetRetiredPages(self, handle: GpuState, cause: int) -> list[int]:
        gpu = self._gpu(handle)
        if cause == NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS:
            count, base = gpu.retired_pages_sbe, 0x1_0000_0000
        elif cause == NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR:
            count, base = gpu.retired_pages_dbe, 0x2_0000_0000
        else:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return [base + i * _PAGE_BYTES for i in range(count)]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: GpuState) -> int:
        gpu = self._gpu(handle)
        return pynvml.NVML_FEATURE_ENABLED if gpu.retired_pages_pending else 0

    def nvmlDeviceGetRemappedRows(self, handle: GpuState) -> tuple[int, int, int, int]:
        gpu = self._gpu(handle)
        return (
            gpu.remapped_rows_corrected,
            gpu.remapped_rows_uncorrected,
            int(gpu.remapped_rows_pending),
            int(gpu.remapped_rows_failure),
        )

    # ---------------------------------------------------------------- event sets

    def nvmlDeviceGetSupportedEventTypes(self, handle: GpuState) -> int:
        gpu = self._gpu(handle)
        if not gpu.supported_events:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.supported_events

    def nvmlEventSetCreate(self) -> SimulatedEventSet:
        self._check()
        return SimulatedEventSet()

    def nvmlDeviceRegisterEvents(
        self, handle: GpuState, event_types: int, event_set: SimulatedEventSet
    ) -> None:
        gpu = self._gpu(handle)
        if event_types & ~gpu.supported_events:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        with self._events_changed:
            key = id(gpu)
            event_set.since.setdefault(key, len(self._stream))  # only what happens from now on
            event_set.masks[key] = event_set.masks.get(key, 0) | event_types

    def nvmlEventSetWait_v2(
        self, event_set: SimulatedEventSet, timeout_ms: int
    ) -> pynvml.nvmlFriendlyObject:
        """Return the next registered event; raise NVMLError_Timeout after `timeout_ms`."""
        self._check()
        deadline = time.monotonic() + timeout_ms / 1000
        with self._events_changed:
            while True:
                found = self._next_event(event_set)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or event_set.freed:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
                self._events_changed.wait(remaining)

    def nvmlEventSetFree(self, event_set: SimulatedEventSet) -> None:
        self._check()
        with self._events_changed:
            event_set.freed = True
            self._events_changed.notify_all()

    # ---------------------------------------------------------------- injection

    def inject_event(self, gpu_index: int, event_type: int, data: int = 0) -> None:
        """Append an NVML event to GPU `gpu_index`'s stream and wake the waiting sets."""
        with self._events_changed:
            self._stream.append((self.gpus[gpu_index % len(self.gpus)], event_type, data))
            self._events_changed.notify_all()

    def apply_event(self, kind: str, params: dict[str, Any]) -> None:
        """Apply a scenario event of one of GPU_HEALTH_KINDS, with its parameters."""
        gpu = self.gpus[params.get("gpu", 0) % len(self.gpus)]
        if kind == "xid":
            self.inject_event(gpu.index, EVENT_XID, int(params["code"]))
        elif kind == "row_remap":
            gpu.remapped_rows_corrected += params["corrected"]
            gpu.remapped_rows_uncorrected += params["uncorrected"]
            gpu.remapped_rows_pending = gpu.remapped_rows_pending or params["pending"]
            gpu.remapped_rows_failure = gpu.remapped_rows_failure or params["failure"]
            failed = params["failure"]
            kind_bit = EVENT_DRAM_RETIREMENT_FAILURE if failed else EVENT_DRAM_RETIREMENT
            self.inject_event(gpu.index, kind_bit)
        elif kind == "retired_pages":
            gpu.retired_pages_sbe += params["sbe"]
            gpu.retired_pages_dbe += params["dbe"]
            gpu.retired_pages_pending = gpu.retired_pages_pending or params["pending"]
        elif kind == "gpu_lost":
            gpu.lost = True
            gpu.vanished = gpu.vanished or params["vanish"]
        else:
            raise ValueError(f"{kind!r} is not one of {GPU_HEALTH_KINDS}")

    # ---------------------------------------------------------------- helpers

    def _next_event(self, event_set: SimulatedEventSet) -> pynvml.nvmlFriendlyObject | None:
        while event_set.read < len(self._stream):
            position = event_set.read
            gpu, event_type, data = self._stream[position]
            event_set.read += 1
            key = id(gpu)
            if position >= event_set.since.get(key, len(self._stream)) and (
                event_type & event_set.masks.get(key, 0)
            ):
                return pynvml.nvmlFriendlyObject(
                    {
                        "device": gpu,
                        "eventType": event_type,
                        "eventData": data,
                        "gpuInstanceId": 0xFFFFFFFF,
                        "computeInstanceId": 0xFFFFFFFF,
                    }
                )
        return None

    def _listed(self) -> list[GpuState]:
        return [g for g in self.gpus if not g.vanished]

    def _check(self) -> None:
        if self._init_count <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: GpuState) -> GpuState:
        self._check()
        if not isinstance(handle, GpuState):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if handle.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return handle
