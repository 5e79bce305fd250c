"""Labelled history from the simulator: a scenario run with the real agent, and what happened.

`simulate()` runs one in-process simulated host (the real agent beside it, on the simulated
clock) at speed 0: the host steps tick by tick and the agent collects a checkpoint every
CHECKPOINT_EVERY_S simulated seconds, asking for the events since the previous one as the
control plane does. The checkpoints come back as the documented dicts.

Beside them, the ground truth: when each failure really began, read from the simulated
server itself (never from the checkpoints, which are what is evaluated):

    cuda_oom            the engine died with more memory used than the GPU has
    nccl_error          the engine died at the NCCL watchdog's timeout (the scenario's event)
    system_resource     the engine died with a filesystem full (No space left on device)
    engine_dead         any other death (an RPC timeout after a hang, a worker's death)
    hang                the engine stalled: no step makes progress (an engine stall, an NCCL hang)
    gpu_hardware        a GPU-health event of the timeline (XID, uncorrectable ECC, row remap...)
    thermal_throttling  a GPU's thermal slowdown bits switched on
    kv_cache_exhausted  a preemption storm began: PREEMPTION_STORM preemptions within STORM_S
                        (the first of them is the start)

For a KV-cache storm the truth also says when the traffic that caused it began to rise
(`Run.traffic_onsets`: the last moment the timeline's demand, load x prompt x output length,
sat within TRAFFIC_CALM of normal). No predictor can know of it earlier: the time from that
onset to the storm bounds any lead time.

Each is an episode (learning.history.FailureEvent): a death lasts until the server serves
again, a condition until it has been gone for CLEAR_S.

With `vary=True` (the default) each seed also varies the scenario's numbers (leak rate,
temperature rise, ramps, load, when things start) within VARIATION, so that runs are not
one timeline with different noise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.checkpoint import to_dict
from learning.history import PREEMPTION_STORM, STORM_S, FailureEvent
from simulator.engine import Phase, SimulatedVllm
from simulator.fleet import TICK_S, SimulatedClock
from simulator.gpu import HW_THERMAL_SLOWDOWN, SW_THERMAL_SLOWDOWN
from simulator.host import SimulatedHost
from simulator.scenario import GPU_HEALTH_KINDS, Effect, Scenario, load_scenario, one_off_events

CHECKPOINT_EVERY_S = 5.0
EPOCH = 1_781_503_200.0  # 2026-06-15 06:00 UTC, as the simulator's reference sample
CLEAR_S = 60.0
FAILURE_SCENARIOS = (
    "kv_cache_exhaustion",
    "memory_leak_oom",
    "foreign_process_oom",
    "thermal_throttling",
    "engine_death",
    "nccl_hang",
    "xid_hardware_fault",
    "disk_fill",
)
HEALTHY_SCENARIOS = ("healthy", "load_spike")
THERMAL_BITS = SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN
# Parameter -> (low, high) factor a varied run multiplies it by (log-uniform).
VARIATION = {
    "mib_per_s": (0.5, 2.0),
    "gib": (0.85, 1.04),
    "temp_rise_c": (0.8, 1.25),
    "ramp_s": (0.6, 1.6),
    "timeout_s": (0.8, 1.25),
    "rate_rps": (0.8, 1.2),
    "repeat_every_s": (0.8, 2.5),  # a repeating timeline's period: no clock to learn
    "swing_period_s": (0.5, 2.0),
    "swing": (0.5, 1.5),
}
# When the timeline's effects start, moved together (as far as a repeating timeline's
# period allows), so that failures do not always come at the same uptime.
SHIFT_S = (-60.0, 600.0)
MULTIPLIER_SPREAD = (0.8, 1.2)  # of a multiplier's excess over 1
REPLAY_SHARE = 0.5  # varied runs whose timeline replays after a restart (else it is cured)
TRAFFIC_CALM = 1.05  # the timeline's demand multiplier at or below this is normal traffic


@dataclass
class Run:
    host: str
    scenario: str
    seed: int
    epoch: float
    duration_s: float
    checkpoints: list[dict[str, Any]]
    truth: list[FailureEvent]
    variation: dict[str, float] = field(default_factory=dict)
    # (a KV-cache storm's start, when the traffic behind it began to rise), epoch s
    traffic_onsets: list[tuple[float, float]] = field(default_factory=list)

    @property
    def group(self) -> str:
        """Return the run's name, e.g. "memory_leak_oom/7": samples of one run stay together."""
        return f"{self.scenario}/{self.seed}"


# The checkpoint's event lists: each holds what happened since the agent's previous checkpoint.
EVENT_LISTS = ("transitions", "errors", "gpu_events", "validations")


def polled_every(checkpoints: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """Return every `every`-th of `checkpoints` (the first, the every+1-th, ...) as a control
    plane polling that much less often would have received them: each carries the events of
    the checkpoints left out since the one before it."""
    kept: list[dict[str, Any]] = []
    carried: dict[str, list[Any]] = {k: [] for k in EVENT_LISTS}
    for i, cp in enumerate(checkpoints):
        for k in EVENT_LISTS:
            carried[k] += cp.get(k) or []
        if i % every == 0:
            kept.append({**cp, **carried})
            carried = {k: [] for k in EVENT_LISTS}
    return kept


def simulate(
    scenario: str, seed: int, duration_s: float, *, vary: bool = True, gpus: int | None = None
) -> Run:
    """Return one host's checkpoints and ground truth over `duration_s` simulated seconds; with
    `gpus`, on a host of that many GPUs (on_gpus)."""
    return asyncio.run(_simulate(scenario, seed, duration_s, vary, gpus))


def simulate_many(
    scenarios: list[str],
    seeds: list[int],
    duration_s: float,
    *,
    vary: bool = True,
    workers: int = 1,
    gpus: int | None = None,
) -> list[Run]:
    """Return a run of every scenario with every seed (in processes when `workers` > 1)."""
    jobs = [(name, seed, duration_s, vary, gpus) for seed in seeds for name in scenarios]
    if workers <= 1:
        return [simulate(n, s, d, vary=v, gpus=g) for n, s, d, v, g in jobs]
    # Spawned, not forked: the caller may hold threads (scikit-learn's OpenMP pool) that a
    # forked child would inherit half-locked.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_simulate_job, jobs))


def _simulate_job(job: tuple[str, int, float, bool, int | None]) -> Run:
    name, seed, duration_s, vary, gpus = job
    return simulate(name, seed, duration_s, vary=vary, gpus=gpus)


def on_gpus(scenario: Scenario, gpus: int) -> Scenario:
    """Return `scenario` on a host of `gpus` GPUs, the model served tensor-parallel over all of
    them; its effects stay on the GPUs they name (a foreign process on GPU 0, say)."""
    host = dataclasses.replace(scenario.host, gpu_count=gpus)
    engine_args = {**scenario.engine_args, "tensor_parallel_size": gpus}
    return dataclasses.replace(scenario, host=host, engine_args=engine_args)


async def _simulate(name: str, seed: int, duration_s: float, vary: bool, gpus: int | None) -> Run:
    scenario, variation = load_scenario(name), dict[str, float]()
    if gpus is not None:
        scenario = on_gpus(scenario, gpus)
    if vary:
        scenario, variation = varied(scenario, random.Random(f"vary:{name}:{seed}"))
    clock = SimulatedClock(EPOCH)
    host = SimulatedHost("gpu-01", scenario, seed, EPOCH, clock=clock)
    truth = _Truth(host.sim)
    checkpoints: list[dict[str, Any]] = []
    await host.start()
    try:
        assert host.agent is not None
        per_checkpoint = round(CHECKPOINT_EVERY_S / TICK_S)
        for _ in range(round(duration_s / CHECKPOINT_EVERY_S)):
            for _ in range(per_checkpoint):
                truth.before_step(TICK_S)
                host.step(TICK_S)
                clock.t += TICK_S
                truth.after_step()
            await host.sync()
            since = checkpoints[-1]["event_seq"] if checkpoints else None
            checkpoints.append(to_dict(await host.agent.collect(events_since=since)))
    finally:
        await host.close()
    events = truth.events()
    return Run(
        "gpu-01",
        name,
        seed,
        EPOCH,
        duration_s,
        checkpoints,
        events,
        variation,
        truth.traffic_onsets,
    )


# ---------------------------------------------------------------- varied scenarios


def varied(scenario: Scenario, rng: random.Random) -> tuple[Scenario, dict[str, float]]:
    """Return `scenario` with its numbers varied by `rng`, and the factors used."""
    factors = {
        k: math.exp(rng.uniform(math.log(lo), math.log(hi))) for k, (lo, hi) in VARIATION.items()
    }
    spread = rng.uniform(*MULTIPLIER_SPREAD)
    effects = tuple(_varied_effect(e, factors, spread) for e in scenario.effects)
    period = scenario.repeat_every_s * factors["repeat_every_s"]
    scenario = dataclasses.replace(scenario, repeat_every_s=period)
    shift = rng.uniform(*_shift_range(scenario, effects))
    effects = tuple(dataclasses.replace(e, at_s=e.at_s + shift, until_s=_later(e.until_s, shift))
                    for e in effects)  # fmt: skip
    replay = scenario.replay_after_restart and rng.random() < REPLAY_SHARE
    load = dataclasses.replace(
        scenario.load,
        **{
            k: getattr(scenario.load, k) * factors[k]
            for k in ("rate_rps", "swing_period_s", "swing")
        },
    )
    changed = dataclasses.replace(
        scenario, effects=effects, events=one_off_events(effects), load=load,
        replay_after_restart=replay,
    )  # fmt: skip
    return changed, {**factors, "multiplier_spread": spread, "shift_s": shift, "replay": replay}


def _shift_range(scenario: Scenario, effects: tuple[Effect, ...]) -> tuple[float, float]:
    """Return how far the effects may move: not before 10 s of uptime, and a repeating
    timeline's effects (ramps included) must still end within its period."""
    if not effects:
        return 0.0, 0.0
    low = max(SHIFT_S[0], 10.0 - min(e.at_s for e in effects))
    high = SHIFT_S[1]
    if scenario.repeat_every_s > 0:
        ends = [(e.until_s or e.at_s) + e.params.get("ramp_s", 0.0) for e in effects]
        high = min(high, scenario.repeat_every_s - max(ends))
    return low, max(low, high)


def _later(t: float | None, shift: float) -> float | None:
    return None if t is None else t + shift


def _varied_effect(e: Effect, factors: dict[str, float], spread: float) -> Effect:
    """Return `e` with its numbers varied by `factors` and its multiplier by `spread`."""
    params = dict(e.params)
    for key in ("mib_per_s", "gib", "temp_rise_c", "ramp_s", "timeout_s"):
        if isinstance(params.get(key), int | float) and params[key]:
            params[key] = params[key] * factors[key]
    if "multiplier" in params:
        params["multiplier"] = 1.0 + (params["multiplier"] - 1.0) * spread
    return dataclasses.replace(e, params=params)


# ---------------------------------------------------------------- ground truth


class _Truth:
    """Watches one simulated server tick by tick and records when failures began."""

    CRASHES = ("cuda_oom", "nccl_error", "system_resource", "engine_dead", "gpu_hardware")

    def __init__(self, sim: SimulatedVllm) -> None:
        self.sim = sim
        self.found: list[FailureEvent] = []
        self._open: dict[str, float] = {}  # failure type -> started at (epoch s)
        self._last_seen: dict[str, float] = {}  # condition -> when it last held
        self._preemptions: list[float] = []  # times of recent preemptions
        self._counted = 0
        self._stalled = False
        self._dead_run: object | None = None  # the server run whose death was recorded
        self._faults: set[str] = set()
        self._nccl_due = False
        self._was_down = True
        self._calm_at = sim.now  # the last moment the timeline's traffic was normal
        self.traffic_onsets: list[tuple[float, float]] = []

    def before_step(self, dt: float) -> None:
        """Note the timeline's one-off events the coming step applies (as the engine will)."""
        sim, run = self.sim, self.sim.run
        kinds: set[str] = set()
        if sim.phase is Phase.SERVING and run is not None and run.timeline_on:
            u0 = run.uptime(sim.t)
            kinds = {e.kind for e in sim.scenario.events_between(u0, u0 + dt)}
        self._faults = kinds & {*GPU_HEALTH_KINDS, "ecc_uncorrected"}
        self._nccl_due = "nccl_timeout" in kinds

    def after_step(self) -> None:
        now = self.sim.now
        if self._faults:
            self._begin("gpu_hardware", now)
        self._watch_death(now)
        self._watch_stall(now)
        hot = self._thermal()
        self._watch_condition("thermal_throttling", hot, hot, now)
        preempted = self._count_preemptions(now)
        storm = len(self._preemptions) >= PREEMPTION_STORM
        self._watch_traffic(now)
        self._watch_condition("kv_cache_exhausted", storm, preempted, now)

    def events(self) -> list[FailureEvent]:
        """Return every failure found, the ones still going with no end."""
        still = [FailureEvent(t, at, None, "simulator") for t, at in self._open.items()]
        return sorted([*self.found, *still], key=lambda f: (f.started_at, f.failure_type))

    def _watch_death(self, now: float) -> None:
        run = self.sim.run
        if run is not None and run.died_t is not None and run is not self._dead_run:
            self._dead_run = run
            self._close("hang", now)
            self._begin(self._death_type(), self.sim.epoch + run.died_t)
        serving = self.sim.phase is Phase.SERVING
        if serving and self._was_down:  # restarted: the failures that ended the last run end
            for failure_type in self.CRASHES:
                self._close(failure_type, now)
        self._was_down = not serving

    def _death_type(self) -> str:
        if any(g.memory_used_bytes > g.memory_total_bytes for g in self.sim.gpus):
            return "cuda_oom"
        if self.sim.full_disks():
            return "system_resource"
        return "nccl_error" if self._nccl_due else "engine_dead"

    def _watch_stall(self, now: float) -> None:
        run = self.sim.run
        stalled = self.sim.phase is Phase.SERVING and run is not None and run.stalled
        if stalled and not self._stalled:
            self._begin("hang", now)
        if not stalled and self._stalled:
            self._close("hang", now)
        self._stalled = stalled

    def _thermal(self) -> bool:
        return any(g.clocks_event_reasons & THERMAL_BITS for g in self.sim.gpus)

    def _count_preemptions(self, now: float) -> bool:
        """Keep the times of the preemptions of the last STORM_S; True if this step had one."""
        run = self.sim.run
        stats = run.stats if run is not None else None
        count = stats.preemptions if stats is not None else 0
        if count < self._counted:  # a new process: its counters start again
            self._counted = 0
        new = count - self._counted
        self._preemptions += [now] * new
        self._counted = count
        self._preemptions = [t for t in self._preemptions if t > now - STORM_S]
        return new > 0

    def _watch_condition(self, failure_type: str, starts: bool, active: bool, now: float) -> None:
        """Begin an episode when `starts`; end it once not `active` for CLEAR_S."""
        if active:
            self._last_seen[failure_type] = now
        if starts and failure_type not in self._open:
            start = self._preemptions[0] if failure_type == "kv_cache_exhausted" else now
            self._begin(failure_type, start)
        elif now - self._last_seen.get(failure_type, -math.inf) >= CLEAR_S:
            self._close(failure_type, now)

    def _watch_traffic(self, now: float) -> None:
        sim, run = self.sim, self.sim.run
        if sim.phase is Phase.SERVING and run is not None and run.timeline_on:
            shape = sim.scenario.conditions(run.uptime(sim.t)).shape
            if shape.load * shape.prompt * shape.output > TRAFFIC_CALM:
                return
        self._calm_at = now

    def _begin(self, failure_type: str, at: float) -> None:
        if failure_type not in self._open:
            self._open[failure_type] = at
            if failure_type == "kv_cache_exhausted":
                self.traffic_onsets.append((at, min(self._calm_at, at)))

    def _close(self, failure_type: str, at: float) -> None:
        started = self._open.pop(failure_type, None)
        if started is not None:
            self.found.append(FailureEvent(failure_type, started, at, "simulator"))
