"""A stand-in for `pynvml` over simulated GPUs, for machines without one.

`SimulatedNvml` offers the pynvml functions the agent calls, under the same names, with the
same return shapes (pynvml's own structs) and the same exceptions (`pynvml.NVMLError_*`), so
the agent's NVML collector runs unchanged against it. With no arguments it is one idle
H100 80GB; the simulated fleet passes the GPUs its engines drive.
"""

from __future__ import annotations

from collections.abc import Sequence

import pynvml

from simulator.catalog import DEFAULT_GPU, gpu_spec
from simulator.gpu import GpuState

DRIVER_VERSION = "570.172.08"

# The same values as pynvml's, re-exported so callers can use `nvml.NVML_CLOCK_SM`.
NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
NVML_MEMORY_ERROR_TYPE_CORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
NVML_VOLATILE_ECC = pynvml.NVML_VOLATILE_ECC
NVML_AGGREGATE_ECC = pynvml.NVML_AGGREGATE_ECC

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


class SimulatedNvml:
    """pynvml's calls over `gpus`; handles are the GpuState objects themselves."""

    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM
    NVML_MEMORY_ERROR_TYPE_CORRECTED = NVML_MEMORY_ERROR_TYPE_CORRECTED
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC = NVML_VOLATILE_ECC
    NVML_AGGREGATE_ECC = NVML_AGGREGATE_ECC
    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported

    def __init__(
        self, gpus: Sequence[GpuState] | None = None, driver_version: str = DRIVER_VERSION
    ) -> None:
        self.gpus = list(gpus) if gpus is not None else [idle_gpu()]
        self.driver_version = driver_version
        self._init_count = 0

    def nvmlInit(self) -> None:
        self._init_count += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self._init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> GpuState:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

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

    def _check(self) -> None:
        if self._init_count <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: GpuState) -> GpuState:
        self._check()
        if not isinstance(handle, GpuState):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle
