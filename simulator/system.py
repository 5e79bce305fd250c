"""The simulated machine around vLLM: host RAM and filesystems, through psutil's interface.

`SimulatedSystem` answers what the agent asks psutil (`virtual_memory()`,
`disk_usage(path)`) with psutil's named tuples. The figures follow the server:

    RAM          RAM_PER_GPU_BYTES per GPU (8 GPUs: 2 TiB). Available is the total less
                 what the OS and other services hold, the vLLM process tree's resident
                 memory (a host_memory_leak shows here) and /dev/shm's contents (tmpfs
                 pages are RAM).
    /            a 3.84 TB NVMe root disk; OS, container images and the model cache use
                 ROOT_USED_BYTES, or all but `[host] root_free_gib`.
    /dev/shm     tmpfs, half the RAM (the kernel's default size).

A disk_fill effect adds the vLLM process's own writes (simulator/engine.py); they go when
the process exits. Neither filesystem reserves blocks for root, so used + free = total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from simulator.catalog import GIB, MIB

if TYPE_CHECKING:
    from simulator.engine import SimulatedVllm

RAM_PER_GPU_BYTES = 256 * GIB  # an 8-GPU H100 server carries 2 TiB
OS_USED_BYTES = 24 * GIB  # kernel, drivers, container runtime, monitoring: steady
ROOT_DISK_BYTES = 3_840_000_000_000  # the usual 3.84 TB NVMe (3.5 TiB)
ROOT_USED_BYTES = 1_100 * GIB  # OS, container images, a few models in the HF cache
SHM_USED_BYTES = 96 * MIB  # vLLM's shm broadcast buffers and NCCL's segments
DISK_PATHS = ("/", "/dev/shm")


class VirtualMemory(NamedTuple):  # psutil's svmem, the fields the agent reads and a few more
    total: int
    available: int
    percent: float
    used: int
    free: int


class DiskUsage(NamedTuple):  # psutil's sdiskusage
    total: int
    used: int
    free: int
    percent: float


@dataclass(frozen=True, slots=True)
class Filesystem:
    total_bytes: int
    base_used_bytes: int  # before the vLLM process writes anything


def ram_bytes(gpu_count: int) -> int:
    return RAM_PER_GPU_BYTES * max(gpu_count, 1)


def filesystems(gpu_count: int, root_free_gib: float | None = None) -> dict[str, Filesystem]:
    """Return the watched filesystems by path (DISK_PATHS), as the host starts."""
    root_used = ROOT_USED_BYTES
    if root_free_gib is not None:
        root_used = ROOT_DISK_BYTES - int(root_free_gib * GIB)
    return {
        "/": Filesystem(ROOT_DISK_BYTES, root_used),
        "/dev/shm": Filesystem(ram_bytes(gpu_count) // 2, SHM_USED_BYTES),
    }


class SimulatedSystem:
    """The host of one simulated server, as psutil shows it."""

    def __init__(self, sim: SimulatedVllm) -> None:
        self.sim = sim

    def virtual_memory(self) -> VirtualMemory:
        total = ram_bytes(len(self.sim.gpus))
        used = OS_USED_BYTES + self._tree_rss_bytes() + self.sim.disk_used_bytes("/dev/shm")
        available = max(0, total - used)
        used = total - available
        # No page cache is simulated: what is not used is free.
        return VirtualMemory(total, available, _pct(used, total), used, available)

    def disk_usage(self, path: str) -> DiskUsage:
        if path not in self.sim.filesystems:
            raise FileNotFoundError(2, "No such file or directory", path)
        total = self.sim.filesystems[path].total_bytes
        used = self.sim.disk_used_bytes(path)
        return DiskUsage(total, used, total - used, _pct(used, total))

    def _tree_rss_bytes(self) -> int:
        run = self.sim.run
        if run is None:
            return 0
        return sum(int(p.rss_bytes) for p in run.proc.walk() if p.running)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0
