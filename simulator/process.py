"""The simulated vLLM process tree, seen through a psutil-like interface.

vLLM runs an API server process, an EngineCore process and, with tensor parallelism, one
worker per GPU. `SimulatedProcess` answers what the agent asks psutil (`memory_info`,
`cpu_times`, `num_fds`, ...) and raises psutil's own `NoSuchProcess` once it has exited,
as a real one would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import psutil

from simulator.catalog import GIB, MIB


class MemoryInfo(NamedTuple):
    rss: int
    vms: int


class CpuTimes(NamedTuple):
    user: float
    system: float
    children_user: float = 0.0
    children_system: float = 0.0


class Leaks(NamedTuple):
    rss_mib_per_s: float = 0.0
    fds_per_s: float = 0.0


class SimulatedProcess:
    """One process; the fields are simulation state, the methods are psutil's."""

    def __init__(
        self, pid: int, name: str, create_time: float, rss_bytes: int, fds: int, threads: int
    ) -> None:
        self.pid = pid
        self.name_ = name
        self.created_at = create_time
        self.rss_bytes = float(rss_bytes)
        self.vms_bytes = float(rss_bytes * 7)
        self.fds = float(fds)
        self.threads = threads
        self.cpu_user_s = 0.0
        self.cpu_system_s = 0.0
        self.running = True
        self.kids: list[SimulatedProcess] = []

    def __repr__(self) -> str:
        state = "running" if self.running else "terminated"
        return f"SimulatedProcess(pid={self.pid}, name={self.name_!r}, status={state!r})"

    # psutil.Process interface -----------------------------------------------------------

    def oneshot(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def name(self) -> str:
        self._alive()
        return self.name_

    def memory_info(self) -> MemoryInfo:
        self._alive()
        return MemoryInfo(rss=int(self.rss_bytes), vms=int(self.vms_bytes))

    def cpu_times(self) -> CpuTimes:
        self._alive()
        return CpuTimes(user=self.cpu_user_s, system=self.cpu_system_s)

    def num_fds(self) -> int:
        self._alive()
        return int(self.fds)

    def num_threads(self) -> int:
        self._alive()
        return self.threads

    def create_time(self) -> float:
        self._alive()
        return self.created_at

    def children(self, recursive: bool = False) -> list[SimulatedProcess]:
        self._alive()
        found = [k for k in self.kids if k.running]
        if recursive:
            found += [g for k in found for g in k.children(recursive=True)]
        return found

    def is_running(self) -> bool:
        return self.running

    def _alive(self) -> None:
        if not self.running:
            raise psutil.NoSuchProcess(self.pid, self.name_)

    def walk(self) -> Iterator[SimulatedProcess]:
        yield self
        for kid in self.kids:
            yield from kid.walk()


class CurrentProcess:
    """The vLLM process as the agent watching it sees it: whichever run is alive now.

    The agent holds one process object for its whole life; a restarted vLLM has a new pid,
    so this handle follows the server's current process and reports the old one as gone.
    """

    def __init__(self, current: Callable[[], SimulatedProcess | None]) -> None:
        self._current = current
        self._last_pid = 0

    @property
    def pid(self) -> int:
        proc = self._current()
        if proc is not None:
            self._last_pid = proc.pid
        return self._last_pid

    def is_running(self) -> bool:
        proc = self._current()
        return proc is not None and proc.running

    def oneshot(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def memory_info(self) -> MemoryInfo:
        return self._proc().memory_info()

    def cpu_times(self) -> CpuTimes:
        return self._proc().cpu_times()

    def num_fds(self) -> int:
        return self._proc().num_fds()

    def num_threads(self) -> int:
        return self._proc().num_threads()

    def create_time(self) -> float:
        return self._proc().create_time()

    def children(self, recursive: bool = False) -> list[SimulatedProcess]:
        return self._proc().children(recursive=recursive)

    def _proc(self) -> SimulatedProcess:
        proc = self._current()
        if proc is None or not proc.running:
            raise psutil.NoSuchProcess(self.pid)
        return proc


def spawn_tree(first_pid: int, created_at: float, tp: int) -> SimulatedProcess:
    """Return a new API server with its EngineCore and, when `tp > 1`, one worker per GPU."""
    api = SimulatedProcess(first_pid, "vllm", created_at, int(1.98 * GIB), 187, 53)
    api.vms_bytes = 14.3e9
    core = SimulatedProcess(
        first_pid + 211, "VLLM::EngineCore", created_at, int(3.4 * GIB), 121, 96
    )
    api.kids.append(core)
    if tp > 1:
        for rank in range(tp):
            worker = SimulatedProcess(
                first_pid + 260 + rank, f"VLLM::Worker_TP{rank}", created_at, int(2.9 * GIB), 98, 81
            )
            core.kids.append(worker)
    return api


def gpu_owners(api: SimulatedProcess, tp: int) -> list[SimulatedProcess]:
    """Return the process that holds each GPU: the EngineCore alone, or the TP workers."""
    core = api.kids[0]
    return list(core.kids) if tp > 1 else [core]


def advance(api: SimulatedProcess, dt: float, busy: float, tokens: int, leaks: Leaks) -> None:
    """Add `dt` seconds of CPU use and any host leak to every process of the tree."""
    # The API server tokenizes and detokenizes: its CPU follows the tokens served.
    api.cpu_user_s += dt * 0.08 + tokens * 6e-6
    api.cpu_system_s += dt * 0.02 + tokens * 1e-6
    api.rss_bytes += leaks.rss_mib_per_s * MIB * dt
    api.fds += leaks.fds_per_s * dt
    for proc in api.walk():
        if proc is not api:
            # The engine loop spins while there is work and waits on a queue otherwise.
            proc.cpu_user_s += dt * (0.02 + 0.9 * busy)
            proc.cpu_system_s += dt * (0.01 + 0.08 * busy)


def terminate(api: SimulatedProcess) -> None:
    for proc in api.walk():
        proc.running = False
