"""SimulatedNvml answers pynvml's calls with pynvml's shapes and exceptions."""

from __future__ import annotations

import pynvml
import pytest

from simulator.gpu import GpuProcessUse
from simulator.nvml import SimulatedNvml, idle_gpu
from tests.simulator.support import make_sim, run_to_uptime, run_until, scenario_from

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
        "NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS",
        "NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR",
        "NVMLError_Timeout",
        "NVMLError_GpuIsLost",
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


def test_it_answers_the_health_calls_with_pynvmls_shapes() -> None:
    nvml = started(SimulatedNvml())
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetRemappedRows(h) == (0, 0, 0, 0)
    assert nvml.nvmlDeviceGetRetiredPagesPendingStatus(h) == 0
    assert nvml.nvmlSystemGetCudaDriverVersion() == 12080

    nvml.apply_event("row_remap", {"gpu": 0, "corrected": 2, "uncorrected": 1,
                                   "pending": True, "failure": True})  # fmt: skip
    nvml.apply_event("retired_pages", {"gpu": 0, "sbe": 2, "dbe": 1, "pending": True})
    sbe = pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
    dbe = pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
    assert nvml.nvmlDeviceGetRemappedRows(h) == (2, 1, 1, 1)
    assert len(nvml.nvmlDeviceGetRetiredPages(h, sbe)) == 2
    assert len(nvml.nvmlDeviceGetRetiredPages(h, dbe)) == 1
    assert nvml.nvmlDeviceGetRetiredPagesPendingStatus(h) == pynvml.NVML_FEATURE_ENABLED


def test_it_answers_gpu_is_lost_for_a_gpu_off_the_bus() -> None:
    nvml = started(SimulatedNvml([idle_gpu(0), idle_gpu(1)]))
    nvml.apply_event("gpu_lost", {"gpu": 1, "vanish": False})
    h = nvml.nvmlDeviceGetHandleByIndex(1)
    for call in (nvml.nvmlDeviceGetUUID, nvml.nvmlDeviceGetMemoryInfo,
                 nvml.nvmlDeviceGetRemappedRows):  # fmt: skip
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            call(h)
    assert nvml.nvmlDeviceGetCount() == 2  # still listed until it vanishes
    nvml.apply_event("gpu_lost", {"gpu": 1, "vanish": True})
    assert nvml.nvmlDeviceGetCount() == 1


def test_it_names_the_processes_on_its_gpus() -> None:
    gpu = idle_gpu()
    gpu.processes = [GpuProcessUse(4242, 2 * 1024**3, "python3")]
    nvml = started(SimulatedNvml([gpu]))
    assert nvml.nvmlSystemGetProcessName(4242) == "python3"
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlSystemGetProcessName(1)


def test_it_runs_the_xid_scenario_to_the_hang_and_the_engine_death() -> None:
    sim = make_sim("xid_hardware_fault")
    run_to_uptime(sim, 150)
    assert sim.gpus[0].ecc_uncorrected == 1  # the DBE at 90 s
    assert sim.conditions.stalled and sim.phase.value == "serving"  # hung, /health still 200

    run_until(sim, lambda s: s.phase.value != "serving", 120)
    assert sim.phase.value == "dead"  # the RPC timeout at 222 s
