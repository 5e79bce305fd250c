"""One run of the vLLM process, from start to exit: everything a restart throws away.

Counters, `_created` times, the process tree and its pids, the KV pool, leaked memory and
the server's flags (stalled, asleep, paused) all live here, so a restart is a new ServerRun.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.catalog import MIB, GpuSpec, ModelSpec
from simulator.engine_args import EngineArgs
from simulator.kv_sizing import NON_TORCH_BYTES, KvPlan
from simulator.perf import PerfModel
from simulator.process import SimulatedProcess
from simulator.scheduler import Scheduler
from simulator.startup import StartupEvent
from simulator.stats import EngineStats, HttpStats

STATS_LOG_INTERVAL_S = 10.0  # VLLM_LOG_STATS_INTERVAL
SHM_WARNING_INTERVAL_S = 60.0  # VLLM_RINGBUFFER_WARNING_INTERVAL


@dataclass(slots=True)
class LogWindow:
    """What the periodic stats line reports: the change since the previous line."""

    at: float = 0.0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    queries: int = 0
    hits: int = 0


@dataclass(slots=True)
class ServerRun:
    args: EngineArgs  # resolved
    model: ModelSpec
    gpu: GpuSpec
    plan: KvPlan | None
    proc: SimulatedProcess
    started_t: float
    events: list[StartupEvent]
    http: HttpStats
    next_event: int = 0
    gpu_bytes: int = 0  # per GPU, what the vLLM process holds by design
    leaked_bytes: float = 0.0  # per GPU, on top of that
    disk_written_bytes: dict[str, float] = field(default_factory=dict)  # by filesystem path
    serving_since: float | None = None
    died_t: float | None = None
    stats: EngineStats | None = None
    scheduler: Scheduler | None = None
    timeline_on: bool = True
    stalled: bool = False
    pinned: bool = False
    sleep_level: int = 0
    paused: str | None = None  # None, or the pause mode: abort, wait, keep
    busy_s: float = 0.0  # GPU compute time in the last tick
    tokens_seen: int = 0  # generation tokens the API server has detokenized so far
    next_shm_warning_t: float | None = None
    window: LogWindow = field(default_factory=LogWindow)

    def begin_serving(self, t: float, created_at: float) -> None:
        """Register the engine's metrics and open its scheduler, as AsyncLLM does when ready."""
        assert self.plan is not None
        self.serving_since = t
        self.stats = EngineStats(self.args.max_model_len or 0, created_at)
        perf = PerfModel.build(self.args, self.model, self.gpu)
        self.scheduler = Scheduler(self.args, self.plan.num_gpu_blocks, perf, self.stats)
        self.window = LogWindow(at=t)

    def uptime(self, t: float) -> float:
        return 0.0 if self.serving_since is None else t - self.serving_since

    def process_gpu_bytes(self) -> int:
        """Return what the vLLM process holds on each of its GPUs right now."""
        if self.sleep_level:
            return NON_TORCH_BYTES + 512 * MIB  # weights and KV are offloaded or discarded
        return self.gpu_bytes + int(self.leaked_bytes)

    @property
    def running(self) -> int:
        return len(self.scheduler.running) if self.scheduler else 0

    @property
    def waiting(self) -> int:
        return len(self.scheduler.waiting) if self.scheduler else 0
