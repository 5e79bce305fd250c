"""The physical state of one simulated GPU: memory, utilization, heat, power, clocks, health.

`update()` moves it one tick: utilization follows the engine's busy time, power follows
utilization, temperature lags behind power, and heat past the slowdown point sets the
thermal throttle bits and lowers the SM clock, which slows the engine down.

Health (ECC counters, retired pages, remapped rows, fallen off the bus) changes only when a
scenario injects it (simulator/nvml.py, `SimulatedNvml.apply_event`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simulator.catalog import MIB, GpuSpec

IDLE_USED_BYTES = 543 * MIB  # what the driver reports as used on an empty GPU
AMBIENT_C = 28.0
C_PER_W = 0.0625  # steady-state rise per watt: ~68 C at full load
THERMAL_TAU_S = 40.0  # how slowly the die follows the power
POWER_TAU_S = 1.5
SW_SLOWDOWN_C = 87.0
HW_SLOWDOWN_C = 92.0
NCCL_SPIN_POWER = 0.45  # a hung all-reduce spins: util pinned at 100 %, power well below max

# nvmlClocksEventReason* bits (reference §8).
GPU_IDLE = 0x1
SW_POWER_CAP = 0x4
SW_THERMAL_SLOWDOWN = 0x20
HW_THERMAL_SLOWDOWN = 0x40

# nvmlEventType* bits a data-center GPU supports (pynvml's values).
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_PSTATE = 0x4
EVENT_XID = 0x8
EVENT_CLOCK = 0x10
EVENT_DRAM_RETIREMENT = 0x400
EVENT_DRAM_RETIREMENT_FAILURE = 0x800
EVENT_GPU_UNAVAILABLE = 0x4000
EVENT_GPU_RECOVERY_ACTION = 0x8000
SUPPORTED_EVENTS = (
    EVENT_SINGLE_BIT_ECC | EVENT_DOUBLE_BIT_ECC | EVENT_PSTATE | EVENT_XID | EVENT_CLOCK
    | EVENT_DRAM_RETIREMENT | EVENT_DRAM_RETIREMENT_FAILURE | EVENT_GPU_UNAVAILABLE
    | EVENT_GPU_RECOVERY_ACTION
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Work:
    """What the engine asked of its GPUs during a tick."""

    busy: float = 0.0  # fraction of the tick spent in kernels: NVML's "GPU utilization"
    intensity: float = 0.0  # 0..1, how much of the GPU a step's batch keeps busy
    pinned: bool = False  # a hung collective spins at 100 % utilization


def intensity(step_tokens: int) -> float:
    """Return how hard a step of `step_tokens` works the GPU: small decode batches idle SMs."""
    return min(1.0, 0.35 + 0.65 * step_tokens / 1024)


@dataclass(slots=True)
class GpuProcessUse:
    pid: int
    used_bytes: int
    name: str


@dataclass(slots=True)
class GpuState:
    index: int
    spec: GpuSpec
    uuid: str
    serial: str
    temperature_c: float = AMBIENT_C + 4.0
    utilization_gpu: int = 0
    utilization_memory: int = 0
    power_mw: int = 0
    sm_clock_mhz: int = 0
    mem_clock_mhz: int = 0
    clocks_event_reasons: int = GPU_IDLE
    ecc_corrected: float = 0.0  # volatile = aggregate here: the driver was loaded with the host
    ecc_uncorrected: int = 0
    pcie_replays: float = 0.0
    processes: list[GpuProcessUse] = field(default_factory=list)
    retired_pages_sbe: int = 0  # pages retired after repeated single-bit errors
    retired_pages_dbe: int = 0
    retired_pages_pending: bool = False  # a reboot or reset retires them
    remapped_rows_corrected: int = 0
    remapped_rows_uncorrected: int = 0
    remapped_rows_pending: bool = False  # a GPU reset applies the remap
    remapped_rows_failure: bool = False
    lost: bool = False  # fallen off the bus: every NVML call about it answers GPU_IS_LOST
    vanished: bool = False  # ...and nvmlDeviceGetCount no longer counts it
    supported_events: int = SUPPORTED_EVENTS  # 0: the GPU supports no NVML events (vGPU)

    def __post_init__(self) -> None:
        self.power_mw = int(self.spec.idle_power_w * 1000)
        self.sm_clock_mhz = self.spec.idle_sm_clock_mhz
        self.mem_clock_mhz = self.spec.mem_clock_mhz

    @property
    def memory_total_bytes(self) -> int:
        return self.spec.memory_total_bytes

    @property
    def memory_used_bytes(self) -> int:
        return IDLE_USED_BYTES + sum(p.used_bytes for p in self.processes)

    @property
    def memory_free_bytes(self) -> int:
        return max(0, self.memory_total_bytes - self.memory_used_bytes)

    @property
    def slowdown(self) -> float:
        """Return how much longer an engine step takes at the current SM clock (>= 1)."""
        if self.clocks_event_reasons & GPU_IDLE:
            return 1.0
        return self.spec.max_sm_clock_mhz / max(1, self.sm_clock_mhz)


def update(gpu: GpuState, dt: float, work: Work, cooling_offset_c: float) -> None:
    """Advance `gpu` by `dt` seconds of `work`, with its cooling `cooling_offset_c` worse."""
    spec = gpu.spec
    util = 100 if work.pinned else max(0, min(100, round(100 * work.busy)))
    load = NCCL_SPIN_POWER if work.pinned else util / 100 * work.intensity
    was_idle = gpu.clocks_event_reasons & GPU_IDLE
    clock_ratio = 1.0 if was_idle else gpu.sm_clock_mhz / spec.max_sm_clock_mhz
    power_w = (
        spec.idle_power_w + (spec.power_limit_w * 0.92 - spec.idle_power_w) * load * clock_ratio
    )
    target_c = AMBIENT_C + power_w * C_PER_W + cooling_offset_c
    gpu.temperature_c += (target_c - gpu.temperature_c) * (1 - math.exp(-dt / THERMAL_TAU_S))
    gpu.utilization_gpu = util
    gpu.utilization_memory = round(util * 0.55)
    gpu.power_mw = int(power_w * 1000)
    _set_clocks(gpu, util, power_w)


def _set_clocks(gpu: GpuState, util: int, power_w: float) -> None:
    spec, temp = gpu.spec, gpu.temperature_c
    reasons = 0
    clock = float(spec.max_sm_clock_mhz)
    if temp >= SW_SLOWDOWN_C:
        reasons |= SW_THERMAL_SLOWDOWN
        clock *= max(0.55, 1.0 - 0.05 * (temp - SW_SLOWDOWN_C))
    if temp >= HW_SLOWDOWN_C:
        reasons |= HW_THERMAL_SLOWDOWN
        clock *= 0.7
    if power_w >= spec.power_limit_w:
        reasons |= SW_POWER_CAP
    if util == 0:
        reasons |= GPU_IDLE
        clock = min(clock, spec.idle_sm_clock_mhz)
    gpu.clocks_event_reasons = reasons
    gpu.sm_clock_mhz = int(clock)
