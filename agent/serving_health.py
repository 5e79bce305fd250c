"""Judge a vLLM server that answers: serving, degraded (and why), sleeping, or dead.

The rules, in order:
1. /health 503: FAILED_ENGINE_DEAD, except while elastic EP scales (DEGRADED).
2. The engine sleeps (the sleep-state metric, else what the log said): SLEEPING.
3. DEGRADED, the first reason that holds:
   - no forward progress for `stall_after_s` or more with requests running. /health stays 200
     while the engine is wedged, so this is the liveness signal. Saturation is not a hang:
     tokens still advance under full load. The stall is timed from the start of the first
     still interval, so one still interval shorter than `stall_after_s` is not enough; once
     called, only tokens flowing again (or a restart) end it, not a quiet interval.
   - /health failed while /metrics answered.
   - a GPU slowed by heat, a power brake or a hardware slowdown (NVML clock-event reasons).
     The software power cap is left out: a busy GPU sits at its power limit as a matter
     of course.
   - preemptions above `preempting_per_s` for `preempting_for_s`: the KV cache thrashes.
4. Otherwise SERVING.
"""

from __future__ import annotations

from agent.checkpoint import Gpu, Vllm
from agent.lifecycle import LifecycleState

PREEMPTING_PER_S = 0.5
PREEMPTING_FOR_S = 30.0
# Clock-event reasons that slow a GPU down against the workload's will.
SLOWDOWN_REASONS = (
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)


class StallWatch:
    """Times how long the engine has made no progress with requests running."""

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self.stalled = False  # called a stall: held until tokens flow again
        self._since: float | None = None

    def observe(self, vllm: Vllm, now: float) -> float:
        """Return how long the engine has been still, as of monotonic `now`."""
        if vllm.restarted or vllm.forward_progress is True:
            self.reset()
            return 0.0
        if vllm.forward_progress is None and not self.stalled:
            # Cannot tell (first scrape, idle): a stall not yet called starts over.
            self._since = None
            return 0.0
        if self._since is None:
            # The counters already stood still over the whole interval just measured.
            self._since = now - (vllm.interval_s or 0.0)
        still_s = now - self._since
        if still_s >= self.stall_after_s:
            self.stalled = True
        return still_s

    def reset(self) -> None:
        self.stalled = False
        self._since = None


class Sustained:
    """Times how long a condition measured over scrape intervals has held."""

    def __init__(self) -> None:
        self._since: float | None = None

    def observe(self, holds: bool, now: float, interval_s: float | None) -> float:
        """Return for how long the condition has held as of `now` (0 when it does not)."""
        if not holds:
            self._since = None
            return 0.0
        if self._since is None:
            self._since = now - (interval_s or 0.0)
        return now - self._since


class ServingHealth:
    def __init__(
        self,
        stall_after_s: float,
        preempting_per_s: float = PREEMPTING_PER_S,
        preempting_for_s: float = PREEMPTING_FOR_S,
    ) -> None:
        self.stall = StallWatch(stall_after_s)
        self.preempting_per_s = preempting_per_s
        self.preempting_for_s = preempting_for_s
        self._preempting = Sustained()

    def judge(
        self, vllm: Vllm, gpus: list[Gpu], now: float, asleep_by_logs: bool
    ) -> tuple[LifecycleState, str]:
        """Return the state of a server that answered, and why, at monotonic `now`."""
        health = vllm.health
        if health.status_code == 503:
            self.reset()
            if "scaling" in (health.error or ""):
                return LifecycleState.DEGRADED, f"vLLM is scaling: {health.error}"
            return LifecycleState.FAILED_ENGINE_DEAD, "/health answered 503: the engine is dead"
        stalled_s = self.stall.observe(vllm, now)
        preempting_s = self._preempting_for(vllm, now)
        if is_sleeping(vllm, asleep_by_logs):
            self.stall.reset()
            return LifecycleState.SLEEPING, _sleep_detail(vllm)
        reason = self._degraded_reason(vllm, gpus, stalled_s, preempting_s)
        if reason:
            return LifecycleState.DEGRADED, reason
        return LifecycleState.SERVING, serving_detail(vllm)

    def reset(self) -> None:
        self.stall.reset()
        self._preempting = Sustained()

    def _preempting_for(self, vllm: Vllm, now: float) -> float:
        rate = vllm.rates.preemptions_per_s
        holds = rate is not None and rate > self.preempting_per_s
        return self._preempting.observe(holds, now, vllm.interval_s)

    def _degraded_reason(
        self, vllm: Vllm, gpus: list[Gpu], stalled_s: float, preempting_s: float
    ) -> str | None:
        if self.stall.stalled:
            running = vllm.requests_running or 0
            return f"no forward progress for {stalled_s:.0f} s with {running:.0f} requests running"
        if not vllm.health.ok:
            return f"/health failed: {vllm.health.error}"
        if throttled := throttled_gpus(gpus):
            return "GPU throttled: " + "; ".join(throttled)
        if preempting_s >= self.preempting_for_s:
            rate = vllm.rates.preemptions_per_s or 0.0
            return f"preempting {rate:.1f} requests/s for {preempting_s:.0f} s"
        return None


def is_sleeping(vllm: Vllm, asleep_by_logs: bool) -> bool:
    """Return True when the engine sleeps; the metric wins, the log speaks when it is absent."""
    if vllm.sleep_state is not None:
        return vllm.sleep_state != "awake"
    return asleep_by_logs


def throttled_gpus(gpus: list[Gpu]) -> list[str]:
    """Return "GPU <index>: <reasons>" for each GPU slowed down against the workload's will."""
    found = []
    for gpu in gpus:
        reasons = [r for r in gpu.throttle_reasons if r in SLOWDOWN_REASONS]
        if reasons:
            found.append(f"GPU {gpu.index} {', '.join(reasons)}")
    return found


def serving_detail(vllm: Vllm) -> str:
    if vllm.requests_running is None:
        return "/health is ok; no engine metrics"
    detail = f"{vllm.requests_running:.0f} running, {vllm.requests_waiting or 0:.0f} waiting"
    if vllm.kv_cache_usage_pct is not None:
        detail += f", KV cache {vllm.kv_cache_usage_pct:.0f} %"
    return detail


def _sleep_detail(vllm: Vllm) -> str:
    if vllm.sleep_state is not None:
        return f"engine sleep state is {vllm.sleep_state}"
    return "vLLM logged that it fell asleep"
