"""SimulatedNvml answers pynvml's calls with pynvml's shapes and exceptions."""

from __future__ import annotations

import pynvml
import pytest

from simulator.gpu import GpuProcessUse
from simulator.nvml import SimulatedNvml, idle_gpu
from tests.simulator.support import make_sim, run_to_uptime, scenario_from

H100_BYTES = 85_520_809_984


def started(nvml: SimulatedNvml) -> SimulatedNvml:
    nvml.nvmlInit()
    return nvml


def test_it_is_one_idle_h100_by_default() -> None:
    nvml = started(SimulatedNvml())
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    mem = nvml.nvmlDeviceGetMemoryInfo(h)
    assert nvml.nvmlDeviceGetCount() == 1
    assert nvml.nvmlDeviceGetName(h) == "NVIDIA H100 80GB HBM3"
    assert nvml.nvmlDeviceGetUUID(h).startswith("GPU-")
    assert (mem.total, mem.used + mem.free) == (H100_BYTES, H100_BYTES)
    assert mem.used < 1024**3
    assert nvml.nvmlDeviceGetUtilizationRates(h).gpu == 0
    assert nvml.nvmlDeviceGetCurrentClocksEventReasons(h) == pynvml.nvmlClocksEventReasonGpuIdle
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(h) == 700_000
    assert 30 <= nvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU) <= 40
    assert nvml.nvmlDeviceGetComputeRunningProcesses(h) == []
    assert nvml.nvmlSystemGetDriverVersion()


def test_it_raises_pynvmls_own_errors() -> None:
    nvml = SimulatedNvml()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    started(nvml)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(1)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError):
        nvml.nvmlDeviceGetClockInfo(h, 99)
    nvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetName(h)


def test_it_offers_pynvmls_constants() -> None:
    for name in (
        "NVML_TEMPERATURE_GPU",
        "NVML_CLOCK_SM",
        "NVML_CLOCK_MEM",
        "NVML_MEMORY_ERROR_TYPE_CORRECTED",
        "NVML_MEMORY_ERROR_TYPE_UNCORRECTED",
        "NVML_VOLATILE_ECC",
        "NVML_AGGREGATE_ECC",
    ):
        assert getattr(SimulatedNvml, name) == getattr(pynvml, name)


def test_it_reports_ecc_pcie_and_processes_of_a_gpu() -> None:
    gpu = idle_gpu()
    gpu.ecc_corrected, gpu.ecc_uncorrected, gpu.pcie_replays = 12.6, 1, 3.0
    gpu.processes = [GpuProcessUse(4242, 2 * 1024**3, "python3")]
    nvml = started(SimulatedNvml([gpu]))
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    corrected, uncorrected = (
        pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
        pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    )
    assert nvml.nvmlDeviceGetTotalEccErrors(h, corrected, pynvml.NVML_VOLATILE_ECC) == 12
    assert nvml.nvmlDeviceGetTotalEccErrors(h, uncorrected, pynvml.NVML_AGGREGATE_ECC) == 1
    assert nvml.nvmlDeviceGetPcieReplayCounter(h) == 3
    (proc,) = nvml.nvmlDeviceGetComputeRunningProcesses(h)
    assert (proc.pid, proc.usedGpuMemory) == (4242, 2 * 1024**3)


def test_it_shows_vllm_preallocating_memory_and_working_the_gpu() -> None:
    sim = make_sim("healthy")
    run_to_uptime(sim, 120)
    nvml = started(sim.nvml)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    used = nvml.nvmlDeviceGetMemoryInfo(h).used
    (proc,) = nvml.nvmlDeviceGetComputeRunningProcesses(h)
    assert 0.92 * H100_BYTES < used < 0.94 * H100_BYTES  # flat near utilization x total
    assert proc.pid == sim.run.proc.kids[0].pid  # the EngineCore holds the GPU with TP=1
    assert nvml.nvmlDeviceGetUtilizationRates(h).gpu > 50
    assert nvml.nvmlDeviceGetPowerUsage(h) > 150_000
    assert nvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM) == 1980
    assert nvml.nvmlDeviceGetCurrentClocksThrottleReasons(h) == 0


def test_it_counts_ecc_errors_and_pcie_replays_from_a_scenario() -> None:
    effects = [
        {"kind": "ecc_errors", "at_s": 10, "corrected_per_s": 0.5, "uncorrected": 2},
        {"kind": "pcie_replays", "at_s": 10, "per_s": 3.0},
    ]
    sim = make_sim(scenario_from({"effects": effects}))
    run_to_uptime(sim, 30)
    nvml = started(sim.nvml)
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    volatile = pynvml.NVML_VOLATILE_ECC
    assert (
        nvml.nvmlDeviceGetTotalEccErrors(h, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, volatile) == 10
    )
    assert (
        nvml.nvmlDeviceGetTotalEccErrors(h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, volatile)
        == 2
    )
    assert nvml.nvmlDeviceGetPcieReplayCounter(h) == 60
