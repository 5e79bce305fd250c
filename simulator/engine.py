"""One simulated vLLM server: a pure, seeded model driven by `step(dt)` on a simulated clock.

The same name, scenario, seed and epoch give the same run, whatever the wall clock does:
time only moves in `step()`, and every random draw comes from the server's own
`random.Random`. The HTTP layer (server.py) reads this object and never advances it.

Phases of the process:

    DOWN --start--> STARTING --startup done--> SERVING --failure--> DEAD --5 s--> DOWN
                       |                                                           |
                       +--startup failure--> DOWN <--- restart_after_death_s ------+
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from simulator import failures, gpu
from simulator.catalog import GIB, MIB, GpuSpec, ModelSpec, gpu_spec, model_spec
from simulator.engine_args import EngineArgs
from simulator.failures import Line
from simulator.gpu import GpuProcessUse
from simulator.kv_sizing import KvPlan, StartupMemoryError, plan_kv_cache
from simulator.logs import VllmLog
from simulator.nvml import SimulatedNvml, idle_gpu
from simulator.process import Leaks, advance, gpu_owners, spawn_tree, terminate
from simulator.run import SHM_WARNING_INTERVAL_S, STATS_LOG_INTERVAL_S, LogWindow, ServerRun
from simulator.scenario import GPU_HEALTH_KINDS, Conditions, Event, ForeignProcess, Scenario
from simulator.startup import StartupContext, StartupEvent, plan_startup
from simulator.stats import HttpStats
from simulator.system import filesystems
from simulator.workload import Request, Workload

DEFAULT_MAX_MODEL_LEN = 32768  # as in the reference sample
EXIT_AFTER_DEATH_S = 5.0  # vLLM's watchdog notices a dead engine and stops the server
DEFAULT_EPOCH = 1_781_503_200.0  # 2026-06-15 06:00 UTC, the reference sample's start


class Phase(StrEnum):
    DOWN = "down"
    STARTING = "starting"
    SERVING = "serving"
    DEAD = "dead"


class SimulatedVllm:
    def __init__(
        self,
        name: str,
        scenario: Scenario,
        seed: int,
        epoch: float = DEFAULT_EPOCH,
        log: VllmLog | None = None,
    ) -> None:
        self.name = name
        self.scenario = scenario
        self.rng = random.Random(f"{seed}:{name}")
        self.t = 0.0
        self.epoch = epoch
        self.log = log or VllmLog()
        self.given = EngineArgs(model=scenario.host.model, max_model_len=DEFAULT_MAX_MODEL_LEN)
        self.given = self.given.with_changes(scenario.engine_args)
        self.env = {"VLLM_SERVER_DEV_MODE": "1" if scenario.host.dev_mode else "0"}
        self.env.update(scenario.env)
        self.gpus = [idle_gpu(i, scenario.host.gpu_name) for i in range(scenario.host.gpu_count)]
        self.nvml = SimulatedNvml(self.gpus)
        self.filesystems = filesystems(scenario.host.gpu_count, scenario.host.root_free_gib)
        self.workload = Workload(self.rng, scenario.load, self.given.block_size)
        self.phase = Phase.DOWN
        self.run: ServerRun | None = None
        # Processes outside vLLM's control that hold GPU memory (a stray notebook, a zombie
        # vLLM); unlike a scenario's foreign process they outlive restarts.
        self.external: list[ForeignProcess] = []
        self.conditions = Conditions()  # what the scenario imposed in the last step
        self.runs = 0
        self.restart_at: float | None = None
        self.version = 0  # bumped whenever anything /metrics shows may have changed
        self._start(timeline_on=True)

    # ---------------------------------------------------------------- reading the state

    @property
    def now(self) -> float:
        """Return the simulated wall-clock time (epoch seconds)."""
        return self.epoch + self.t

    @property
    def listening(self) -> bool:
        """True when the HTTP port accepts connections (it is refused otherwise)."""
        return self.phase in (Phase.SERVING, Phase.DEAD)

    @property
    def dev_mode(self) -> bool:
        return self.env.get("VLLM_SERVER_DEV_MODE") == "1"

    def disk_used_bytes(self, path: str) -> int:
        """Return the used bytes of the filesystem at `path`, the vLLM process's writes too."""
        fs = self.filesystems[path]
        written = self.run.disk_written_bytes.get(path, 0.0) if self.run else 0.0
        return min(fs.total_bytes, fs.base_used_bytes + int(written))

    def full_disks(self) -> list[str]:
        """Return the paths of the filesystems with no space left."""
        return [
            p for p, fs in self.filesystems.items() if self.disk_used_bytes(p) >= fs.total_bytes
        ]

    @property
    def lifecycle_phase(self) -> str:
        """Return the startup phase name while starting, else the process phase."""
        run = self.run
        if self.phase is Phase.STARTING and run is not None and run.next_event:
            return run.events[run.next_event - 1].phase
        return self.phase.value

    # ---------------------------------------------------------------- advancing time

    def step(self, dt: float) -> None:
        """Advance the server by `dt` simulated seconds."""
        t1 = self.t + dt
        if self.phase is Phase.DOWN and self.restart_at is not None and t1 >= self.restart_at:
            self.t = self.restart_at
            self._start(timeline_on=self.scenario.replay_after_restart)
        conditions = Conditions()
        if self.phase is Phase.STARTING:
            self._advance_startup(t1)
        elif self.phase is Phase.SERVING:
            conditions = self._serve(dt)
        if self.phase is Phase.DEAD and t1 >= self._exit_t() and not self._keep_alive:
            self.t = t1
            self._exit()
        self._update_hardware(dt, conditions)
        self.t = t1
        self.version += 1
        if self.phase is Phase.SERVING:
            self._check_gpu_memory()
        if self.phase is Phase.SERVING:  # again: an OOM may just have ended it
            self._check_disks()

    @property
    def _keep_alive(self) -> bool:
        # With VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1 the server stays up answering 503 forever.
        return self.env.get("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH") == "1"

    def _exit_t(self) -> float:
        died = self.run.died_t if self.run else None
        return (died or 0.0) + EXIT_AFTER_DEATH_S

    def _advance_startup(self, t1: float) -> None:
        run = self.run
        assert run is not None
        while run.next_event < len(run.events) and self.phase is Phase.STARTING:
            event = run.events[run.next_event]
            if run.started_t + event.at_s > t1:
                return
            run.next_event += 1
            self._apply_startup_event(run, event, run.started_t + event.at_s)

    def _apply_startup_event(self, run: ServerRun, event: StartupEvent, at: float) -> None:
        if event.checks_memory and not self._enough_free_memory(run, at):
            return
        self.emit(event.lines, at)
        if event.gpu_bytes is not None:
            run.gpu_bytes = event.gpu_bytes
        if event.phase == "failed":
            self._gone(at)
        elif event.phase == "serving":
            self.phase = Phase.SERVING
            run.begin_serving(at, self.epoch + at)
            run.http = HttpStats(self.epoch + at)

    def _enough_free_memory(self, run: ServerRun, at: float) -> bool:
        # The process holds nothing yet: whatever is used belongs to someone else.
        utilization = run.args.gpu_memory_utilization
        for g in self.gpus:
            if g.memory_free_bytes < utilization * g.memory_total_bytes:
                text = failures.free_memory_too_low(
                    g.memory_free_bytes, g.memory_total_bytes, utilization
                )
                self.emit(failures.startup_failure(text), at)
                self._gone(at)
                return False
        return True

    def _serve(self, dt: float) -> Conditions:
        run = self.run
        assert run is not None and run.scheduler is not None
        t0 = self.t
        u0 = run.uptime(t0)
        conditions = self.scenario.conditions(u0 + dt) if run.timeline_on else Conditions()
        if run.timeline_on:
            for event in self.scenario.events_between(u0, u0 + dt):
                self._on_event(event, t0 + dt)
                if self.phase is not Phase.SERVING:
                    return conditions
        run.stalled, run.pinned = conditions.stalled, conditions.pinned
        run.busy_s = self._tick_engine(run, t0, dt)
        run.scheduler.expire(t0 + dt, self.scenario.load.client_timeout_s)
        self._record_finished(run)
        self._accept_arrivals(run, t0, t0 + dt, conditions)
        run.leaked_bytes += conditions.gpu_leak_mib_per_s * MIB * dt
        written = run.disk_written_bytes
        for path, mib_per_s in conditions.disk_fill_mib_per_s.items():
            written[path] = written.get(path, 0.0) + mib_per_s * MIB * dt
        self._periodic_logs(run, t0 + dt)
        return conditions

    def _tick_engine(self, run: ServerRun, t0: float, dt: float) -> float:
        if run.stalled or run.sleep_level or run.paused == "keep":
            return 0.0
        assert run.scheduler is not None
        slowdown = max(g.slowdown for g in self.gpus)
        return run.scheduler.tick(t0, dt, slowdown, admit=run.paused is None)

    def _record_finished(self, run: ServerRun) -> None:
        assert run.scheduler is not None
        for r in run.scheduler.finished:
            status = 500 if r.finish_reason == "error" else 200
            # Streaming responses carry no Content-Length: the instrumentator records 0.
            response = 0 if r.prompt_len % 5 < 3 else 320 + 4 * r.generated
            end = r.last_token_t
            sizes = (r.request_bytes, response)
            run.http.observe(r.handler, "POST", status, end - r.arrival_t, sizes, self.epoch + end)
        run.scheduler.finished.clear()

    def _accept_arrivals(
        self, run: ServerRun, t0: float, t1: float, conditions: Conditions
    ) -> None:
        assert run.scheduler is not None
        max_len = run.args.max_model_len or DEFAULT_MAX_MODEL_LEN
        accepted, rejected = self.workload.arrivals(t0, t1, conditions.shape, max_len)
        run.scheduler.waiting.extend(accepted)
        for at in rejected:
            run.http.observe(
                "/v1/chat/completions", "POST", 400, 0.004, (4200, 230), self.epoch + at
            )

    def _periodic_logs(self, run: ServerRun, t: float) -> None:
        if run.stalled:
            if run.next_shm_warning_t is None:
                run.next_shm_warning_t = t + SHM_WARNING_INTERVAL_S
            elif t >= run.next_shm_warning_t:
                self.emit(failures.shm_hang(), t)
                run.next_shm_warning_t += SHM_WARNING_INTERVAL_S
        else:
            run.next_shm_warning_t = None
        if t - run.window.at >= STATS_LOG_INTERVAL_S:
            self._log_stats(run, t)

    def _log_stats(self, run: ServerRun, t: float) -> None:
        stats, sched, w = run.stats, run.scheduler, run.window
        assert stats is not None and sched is not None
        span = t - w.at
        queries = stats.prefix_queries - w.queries
        now = LogWindow(t, stats.prompt_by_source["local_compute"], stats.generation_tokens,
                        stats.preemptions, stats.prefix_queries, stats.prefix_hits)  # fmt: skip
        active = now.generation_tokens != w.generation_tokens or sched.running or sched.waiting
        if active:  # vLLM stays quiet while idle
            line = failures.stats_line(
                (now.prompt_tokens - w.prompt_tokens) / span,
                (now.generation_tokens - w.generation_tokens) / span,
                len(sched.running),
                len(sched.waiting),
                now.preemptions - w.preemptions,
                sched.kv_usage,
                (now.hits - w.hits) / queries if queries else 0.0,
            )
            self.emit([line], t)
        run.window = now

    # ---------------------------------------------------------------- scenario events

    def _on_event(self, event: Event, at: float) -> None:
        kind = event.kind
        if kind == "engine_death":
            self._die(_DEATHS[event.params["cause"]](self), at)
        elif kind == "nccl_timeout":
            rank = min(event.params["rank"], len(self.gpus) - 1)
            seq = 40_000 + self.rng.randint(0, 20_000)
            self._die(
                failures.nccl_watchdog(rank, self.epoch + at, event.params["timeout_s"], seq), at
            )
        elif kind == "restart":
            self.t = at
            self.restart()
        elif kind == "ecc_uncorrected":
            self.gpus[event.params["gpu"] % len(self.gpus)].ecc_uncorrected += event.params[
                "uncorrected"
            ]
        elif kind in GPU_HEALTH_KINDS:
            self.nvml.apply_event(kind, event.params)

    def _check_gpu_memory(self) -> None:
        run = self.run
        assert run is not None
        for g in self.gpus:
            if g.memory_used_bytes > g.memory_total_bytes:
                process = run.process_gpu_bytes()
                request = int(2 * GIB * self.rng.uniform(0.3, 1.0))
                free = max(0, g.memory_total_bytes - g.memory_used_bytes + request // 2)
                self._die(failures.cuda_oom(g.memory_total_bytes, free, process, request), self.t)
                return

    def _check_disks(self) -> None:
        # The next write on a full filesystem fails, and the engine step that made it with it.
        if self.full_disks():
            self._die(failures.no_space_left(), self.t)

    # ---------------------------------------------------------------- failures and restarts

    def _die(self, lines: list[Line], at: float) -> None:
        """Kill the engine: /health turns 503, in-flight requests fail, the process exits soon."""
        run = self.run
        assert run is not None and run.scheduler is not None
        self.emit(lines, at)
        self.phase = Phase.DEAD
        run.died_t = at
        in_flight: list[Request] = run.scheduler.running + list(run.scheduler.waiting)
        for r in in_flight:
            sizes = (r.request_bytes, 0)
            run.http.observe(r.handler, "POST", 500, at - r.arrival_t, sizes, self.epoch + at)
        if self.scenario.restart_after_death_s is not None:
            self.restart_at = max(at + self.scenario.restart_after_death_s, at + EXIT_AFTER_DEATH_S)

    def _exit(self) -> None:
        run = self.run
        assert run is not None
        self.emit(failures.terminating(run.proc.pid), self.t)
        self._gone(self.t)

    def _gone(self, at: float) -> None:
        """The process has exited: free its GPUs; schedule the supervisor's restart, if any."""
        run = self.run
        assert run is not None
        terminate(run.proc)
        self.phase = Phase.DOWN
        run.gpu_bytes = 0
        run.leaked_bytes = 0.0
        run.disk_written_bytes.clear()  # its scratch directory goes with it
        if self.restart_at is None and self.scenario.restart_after_death_s is not None:
            self.restart_at = at + self.scenario.restart_after_death_s
        self.version += 1

    def restart(
        self, args: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> None:
        """Stop the server gracefully (if it runs) and start it again, with changed arguments.

        `args` uses vLLM's names (`max_num_seqs`, `gpu_memory_utilization`, ...); the new
        process loads the model again, so it serves only after a full startup.
        """
        run = self.run
        if run is not None and self.phase is not Phase.DOWN:
            if self.phase is Phase.SERVING:
                self.emit(failures.shutdown(run.proc.pid), self.t)
            terminate(run.proc)
        if args:
            self.given = self.given.with_changes(args)
        if env:
            self.env.update(env)
        self._start(timeline_on=self.scenario.replay_after_restart)

    def redeploy(self) -> None:
        """Start again as a new deployment would: the scenario's own engine arguments and its
        timeline from the start, whatever a mitigation changed (the fault comes back)."""
        run = self.run
        if run is not None and self.phase is not Phase.DOWN:
            terminate(run.proc)
        self.given = EngineArgs(model=self.scenario.host.model, max_model_len=DEFAULT_MAX_MODEL_LEN)
        self.given = self.given.with_changes(self.scenario.engine_args)
        self._start(timeline_on=True)

    def add_external_process(self, pid: int, used_bytes: int, gpu_index: int = 0) -> None:
        """Put a process that is not vLLM's on a GPU; it stays until removed."""
        self.external.append(ForeignProcess(gpu_index, pid, used_bytes))
        self.place_gpu_processes()

    def remove_external_process(self, pid: int) -> None:
        self.external = [p for p in self.external if p.pid != pid]
        self.place_gpu_processes()

    def _start(self, timeline_on: bool) -> None:
        """Start a new vLLM process: new pids, new counters, the startup sequence from zero."""
        self.restart_at = None
        self.runs += 1
        host = self.scenario.host
        args = self.given.resolved(gpu_spec(host.gpu_name))
        model, spec = model_spec(args.model), gpu_spec(host.gpu_name)
        plan, failure = _plan(args, model, spec)
        pid = 1000 + 4000 * (self.runs - 1) + self.rng.randint(1, 2000)
        proc = spawn_tree(pid, self.now, args.tensor_parallel_size)
        ctx = StartupContext(args, self.given.non_default(), model, spec, plan, failure,
                             host.startup_scale, self.dev_mode, pid)  # fmt: skip
        events = plan_startup(ctx)
        self.run = ServerRun(args, model, spec, plan, proc, self.t, events, HttpStats(self.now))
        self.run.timeline_on = timeline_on
        self.phase = Phase.STARTING
        self.version += 1

    # ---------------------------------------------------------------- hardware

    def _update_hardware(self, dt: float, conditions: Conditions) -> None:
        """Move the GPUs and the process tree through the tick the engine just ran."""
        work = self._work(dt)
        self.conditions = conditions
        self.place_gpu_processes()
        for g in self.gpus:
            gpu.update(g, dt, work, conditions.cooling_c)
            g.ecc_corrected += conditions.ecc_per_s.get(g.index, 0.0) * dt
            g.pcie_replays += conditions.pcie_per_s.get(g.index, 0.0) * dt
        run = self.run
        if run is not None and run.proc.running:
            tokens = run.stats.generation_tokens if run.stats else 0
            leaks = Leaks(conditions.rss_leak_mib_per_s, conditions.fd_leak_per_s)
            advance(run.proc, dt, work.busy, tokens - run.tokens_seen, leaks)
            run.tokens_seen = tokens

    def _work(self, dt: float) -> gpu.Work:
        run = self.run
        if run is None or self.phase is not Phase.SERVING or run.scheduler is None or dt <= 0:
            return gpu.Work()
        return gpu.Work(
            busy=run.busy_s / dt,
            intensity=gpu.intensity(run.scheduler.step_tokens),
            pinned=run.pinned,
        )

    def place_gpu_processes(self) -> None:
        """Show on each GPU what the vLLM process and any foreign ones hold right now."""
        run = self.run
        alive = run is not None and run.proc.running
        owners = gpu_owners(run.proc, run.args.tensor_parallel_size) if run and alive else []
        held = run.process_gpu_bytes() if run else 0
        for g in self.gpus:
            procs = []
            if g.index < len(owners) and held:
                owner = owners[g.index]
                procs.append(GpuProcessUse(owner.pid, held, owner.name_))
            procs += [
                GpuProcessUse(f.pid, f.used_bytes, "python3")
                for f in (*self.conditions.foreign, *self.external)
                if f.gpu == g.index
            ]
            g.processes = procs

    # ---------------------------------------------------------------- logging

    def emit(self, lines: list[Line] | tuple[Line, ...], at: float) -> None:
        run = self.run
        assert run is not None
        for proc_key, level, where, message in lines:
            proc = self._proc_label(run, proc_key)
            if level:
                self.log.log(self.epoch + at, proc, level, where, message)
            else:
                self.log.raw(proc, message)

    def _proc_label(self, run: ServerRun, key: str) -> str:
        api = run.proc
        if key == "api":
            return f"APIServer pid={api.pid}"
        core = api.kids[0]
        if key == "core":
            return f"EngineCore pid={core.pid}"
        rank = int(key.split(":")[1])
        workers = core.kids
        pid = workers[rank].pid if rank < len(workers) else core.pid
        return f"Worker_TP{rank} pid={pid}"


def _plan(args: EngineArgs, model: ModelSpec, spec: GpuSpec) -> tuple[KvPlan | None, str | None]:
    try:
        return plan_kv_cache(args, model, spec), None
    except StartupMemoryError as exc:
        return None, str(exc)


def _worker_died(sim: SimulatedVllm) -> list[Line]:
    rank = len(sim.gpus) - 1
    return failures.worker_died(f"Worker_TP{rank}" if len(sim.gpus) > 1 else "Worker")


# engine_death causes -> the log lines of that death.
_DEATHS: dict[str, Callable[[SimulatedVllm], list[Line]]] = {
    "rpc_timeout": lambda sim: failures.rpc_timeout(),
    "worker_died": _worker_died,
    "illegal_memory_access": lambda sim: failures.illegal_memory_access(),
}
