"""The NVML collector, with NVML itself replaced by a small fake at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

from agent.agent import Agent
from agent.checkpoint import decode, encode
from agent.collectors.gpu import GpuCollector
from tests.agent.conftest import make_config

MIB = 1024 * 1024
NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED


@dataclass
class FakeDevice:
    name: str | bytes = "NVIDIA H100 80GB HBM3"
    uuid: str | bytes = "GPU-11111111-2222-3333-4444-555555555555"
    used: int = 70_000 * MIB
    total: int = 81_559 * MIB
    util: tuple[int, int] = (87, 41)
    temperature_c: int = 64
    power_mw: int = 412_345
    limit_mw: int = 700_000
    clocks: dict[int, int] = field(
        default_factory=lambda: {pynvml.NVML_CLOCK_SM: 1980, pynvml.NVML_CLOCK_MEM: 2619}
    )
    reasons: int = 0x4 | 0x40  # sw_power_cap, hw_thermal_slowdown
    ecc: dict[tuple[int, int], int] = field(
        default_factory=lambda: {
            (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC): 3,
            (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC): 0,
            (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC): 41,
            (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC): 2,
        }
    )
    replays: int = 7
    retired: dict[int, list[int]] = field(
        default_factory=lambda: {
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS: [0x1000],
            pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR: [0x2000, 0x3000],
        }
    )
    retired_pending: int = 0
    remapped: tuple[int, int, int, int] = (4, 1, 1, 0)  # corrected, uncorrected, pending, failure
    processes: list[Any] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)  # getter names answering NotSupported
    lost: bool = False  # fallen off the bus: every getter answers GPU_IS_LOST


class FakeNvml:
    """pynvml's names, with pynvml's own exception classes and constants."""

    NVMLError = pynvml.NVMLError
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

    def __init__(self, *devices: FakeDevice, init_error: int | None = None) -> None:
        self.devices = list(devices)
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls: list[str] = []  # getter names asked, in order

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.133.20"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self.devices[index]

    def _get(self, handle: FakeDevice, getter: str, value: Any) -> Any:
        self.calls.append(getter)
        if handle.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if getter in handle.unsupported:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        return value

    def nvmlDeviceGetUUID(self, h: FakeDevice) -> str | bytes:
        return self._get(h, "uuid", h.uuid)

    def nvmlDeviceGetName(self, h: FakeDevice) -> str | bytes:
        return self._get(h, "name", h.name)

    def nvmlDeviceGetMemoryInfo(self, h: FakeDevice) -> Any:
        info = SimpleNamespace(used=h.used, total=h.total, free=h.total - h.used)
        return self._get(h, "memory", info)

    def nvmlDeviceGetUtilizationRates(self, h: FakeDevice) -> Any:
        return self._get(h, "utilization", SimpleNamespace(gpu=h.util[0], memory=h.util[1]))

    def nvmlDeviceGetTemperature(self, h: FakeDevice, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._get(h, "temperature", h.temperature_c)

    def nvmlDeviceGetPowerUsage(self, h: FakeDevice) -> int:
        return self._get(h, "power", h.power_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeDevice) -> int:
        return self._get(h, "power_limit", h.limit_mw)

    def nvmlDeviceGetClockInfo(self, h: FakeDevice, clock: int) -> int:
        return self._get(h, "clocks", h.clocks[clock])

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeDevice) -> int:
        return self._get(h, "clocks_event_reasons", h.reasons)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeDevice) -> int:
        return self._get(h, "clocks_throttle_reasons", h.reasons)

    def nvmlDeviceGetTotalEccErrors(self, h: FakeDevice, kind: int, counter: int) -> int:
        getter = "ecc" if counter == pynvml.NVML_VOLATILE_ECC else "ecc_aggregate"
        return self._get(h, getter, h.ecc[kind, counter])

    def nvmlDeviceGetRetiredPages(self, h: FakeDevice, cause: int) -> list[int]:
        return self._get(h, "retired_pages", h.retired[cause])

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: FakeDevice) -> int:
        return self._get(h, "retired_pages_pending", h.retired_pending)

    def nvmlDeviceGetRemappedRows(self, h: FakeDevice) -> tuple[int, int, int, int]:
        return self._get(h, "remapped_rows", h.remapped)

    def nvmlDeviceGetPcieReplayCounter(self, h: FakeDevice) -> int:
        return self._get(h, "pcie_replay", h.replays)

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeDevice) -> list[Any]:
        return self._get(h, "processes", h.processes)


def test_it_reads_every_field_of_every_gpu() -> None:
    vllm_proc = SimpleNamespace(pid=4242, usedGpuMemory=68_000 * MIB)
    hidden = SimpleNamespace(pid=5151, usedGpuMemory=None)  # containers hide it
    nvml = FakeNvml(FakeDevice(processes=[vllm_proc, hidden]), FakeDevice(uuid="GPU-2"))
    gpus, reason = GpuCollector(nvml).collect(now=0.0)

    assert reason is None and [g.index for g in gpus] == [0, 1]
    gpu = gpus[0]
    assert (gpu.name, gpu.uuid) == (
        "NVIDIA H100 80GB HBM3",
        "GPU-11111111-2222-3333-4444-555555555555",
    )
    assert (gpu.memory_used_bytes, gpu.memory_total_bytes) == (70_000 * MIB, 81_559 * MIB)
    assert (gpu.utilization_gpu_pct, gpu.utilization_memory_pct) == (87, 41)
    assert gpu.temperature_c == 64
    assert (gpu.power_w, gpu.power_limit_w) == (412.345, 700.0)
    assert (gpu.sm_clock_mhz, gpu.mem_clock_mhz) == (1980, 2619)
    assert gpu.throttle_reasons == ["sw_power_cap", "hw_thermal_slowdown"]
    assert (gpu.ecc_corrected_volatile, gpu.ecc_uncorrected_volatile) == (3, 0)
    assert (gpu.ecc_corrected_aggregate, gpu.ecc_uncorrected_aggregate) == (41, 2)
    assert (gpu.retired_pages_sbe, gpu.retired_pages_dbe, gpu.retired_pages_pending) == (
        1,
        2,
        False,
    )
    assert (gpu.remapped_rows_corrected, gpu.remapped_rows_uncorrected) == (4, 1)
    assert (gpu.remapped_rows_pending, gpu.remapped_rows_failure) == (True, False)
    assert gpu.lost is False
    assert gpu.pcie_replay_count == 7
    assert [(p.pid, p.used_memory_bytes) for p in gpu.processes] == [
        (4242, 68_000 * MIB),
        (5151, None),
    ]
    assert gpu.missing == {}
    assert gpus[1].uuid == "GPU-2"


def test_it_names_unsupported_fields_and_keeps_the_rest() -> None:
    device = FakeDevice(unsupported={"power", "ecc", "pcie_replay", "utilization"})
    (gpu,), _ = GpuCollector(FakeNvml(device)).collect(now=0.0)

    assert gpu.missing == {
        "power_w": "Not Supported",
        "ecc_corrected_volatile": "Not Supported",
        "ecc_uncorrected_volatile": "Not Supported",
        "pcie_replay_count": "Not Supported",
        "utilization_gpu_pct": "Not Supported",
        "utilization_memory_pct": "Not Supported",
    }
    assert gpu.power_w is None and gpu.ecc_corrected_volatile is None
    assert gpu.utilization_gpu_pct is None
    assert gpu.power_limit_w == 700.0 and gpu.temperature_c == 64  # the rest still read


def test_it_falls_back_to_the_old_throttle_reasons_call() -> None:
    device = FakeDevice(reasons=0x1, unsupported={"clocks_event_reasons"})
    (gpu,), _ = GpuCollector(FakeNvml(device)).collect(now=0.0)

    assert gpu.throttle_reasons == ["gpu_idle"] and "throttle_reasons" not in gpu.missing


def test_it_decodes_names_from_old_bindings_that_return_bytes() -> None:
    device = FakeDevice(name=b"Tesla V100-SXM2-32GB", uuid=b"GPU-abc")
    (gpu,), _ = GpuCollector(FakeNvml(device)).collect(now=0.0)

    assert (gpu.name, gpu.uuid) == ("Tesla V100-SXM2-32GB", "GPU-abc")


def test_it_says_why_when_nvml_cannot_start_and_retries_later() -> None:
    nvml = FakeNvml(FakeDevice(), init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    collector = GpuCollector(nvml)

    gpus, reason = collector.collect(now=100.0)
    assert gpus == [] and reason is not None and reason.startswith("nvmlInit failed: ")
    collector.collect(now=130.0)
    assert nvml.init_calls == 1  # not hammered every second

    nvml.init_error = None
    gpus, reason = collector.collect(now=161.0)
    assert nvml.init_calls == 2 and reason is None and len(gpus) == 1
    collector.close()
    assert nvml.shutdown_calls == 1


async def test_it_puts_gpus_into_the_checkpoint(fake_vllm) -> None:
    nvml = FakeNvml(FakeDevice(unsupported={"pcie_replay"}))
    agent = Agent(make_config(fake_vllm.url, gpu_backend="simulated"), nvml=nvml)
    try:
        cp = await agent.collect()
    finally:
        await agent.close()

    assert cp.gpu_backend == "simulated" and "gpu" not in cp.missing
    assert decode(encode(cp)) == cp
    assert cp.gpus[0].memory_used_bytes == 70_000 * MIB
    assert cp.gpus[0].missing == {"pcie_replay_count": "Not Supported"}
    assert nvml.shutdown_calls == 1


async def test_it_reports_missing_gpus_instead_of_simulating_them(fake_vllm) -> None:
    # This machine has no GPU: real pynvml cannot load its library. The checkpoint must say
    # so rather than quietly invent GPUs.
    agent = Agent(make_config(fake_vllm.url, gpu_backend="nvml"))
    try:
        cp = await agent.collect()
    finally:
        await agent.close()

    assert cp.gpus == [] and cp.gpu_backend == "nvml"
    assert cp.missing["gpu"].startswith("nvmlInit failed: ")


async def test_it_reports_a_simulated_backend_without_its_nvml_object(fake_vllm) -> None:
    agent = Agent(make_config(fake_vllm.url, gpu_backend="simulated"))
    try:
        cp = await agent.collect()
    finally:
        await agent.close()

    assert cp.gpus == [] and "no simulated NVML object" in cp.missing["gpu"]


def test_it_names_missing_health_fields_and_stops_asking_for_them() -> None:
    # An Ampere+ GPU has no page retirement; a pre-Ampere one has no row remapping.
    nvml = FakeNvml(FakeDevice(unsupported={"retired_pages", "retired_pages_pending"}))
    collector = GpuCollector(nvml)

    (gpu,), _ = collector.collect(now=0.0)
    assert gpu.retired_pages_sbe is None and gpu.retired_pages_pending is None
    assert gpu.missing == {
        "retired_pages_sbe": "Not Supported",
        "retired_pages_dbe": "Not Supported",
        "retired_pages_pending": "Not Supported",
    }
    assert gpu.remapped_rows_pending is True  # the rest still read

    nvml.calls.clear()
    (gpu,), _ = collector.collect(now=1.0)
    assert "retired_pages" not in nvml.calls and "retired_pages_pending" not in nvml.calls
    assert "remapped_rows" in nvml.calls
    assert gpu.missing["retired_pages_dbe"] == "Not Supported"  # still named


def test_it_marks_a_gpu_that_fell_off_the_bus_as_lost_and_stops_calling_it() -> None:
    device = FakeDevice(uuid="GPU-aaa", name="NVIDIA H100 80GB HBM3")
    nvml = FakeNvml(device)
    collector = GpuCollector(nvml)
    collector.collect(now=0.0)

    device.lost = True
    nvml.calls.clear()
    (gpu,), reason = collector.collect(now=1.0)

    assert reason is None and gpu.lost is True
    assert nvml.calls == ["uuid"]  # one GPU_IS_LOST answer, then nothing more is asked
    assert (gpu.uuid, gpu.name) == ("GPU-aaa", "NVIDIA H100 80GB HBM3")  # known from before
    assert gpu.missing["memory_used_bytes"] == "GPU is lost"


def test_it_reports_a_gpu_gone_from_the_device_count_as_lost() -> None:
    nvml = FakeNvml(FakeDevice(uuid="GPU-0"), FakeDevice(uuid="GPU-1"))
    collector = GpuCollector(nvml)
    collector.collect(now=0.0)

    del nvml.devices[1]
    gpus, _ = collector.collect(now=1.0)

    assert [(g.index, g.uuid, g.lost) for g in gpus] == [(0, "GPU-0", False), (1, "GPU-1", True)]
    assert gpus[1].missing == {"device": "no longer listed by nvmlDeviceGetCount"}
