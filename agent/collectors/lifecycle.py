"""Decide the lifecycle state from what the collectors saw (a first version, no logs yet).

In order:
1. vLLM unreachable: a refused connection with the vLLM process alive is INITIALIZING (vLLM
   listens only once startup is done); without the process it is STOPPED. A timeout means
   something listens but does not answer: DEGRADED.
2. /health 503: FAILED_ENGINE_DEAD, except while elastic EP scales (DEGRADED).
3. The engine sleeps: SLEEPING.
4. No forward progress for `stall_after_s` or more with requests running: DEGRADED. /health
   keeps answering 200 while the engine is wedged, so this is the liveness signal. Saturation
   is not a hang: tokens still advance under full load, and one slow interval is not enough.
5. /health failed while /metrics answered: DEGRADED.
6. Otherwise SERVING.
"""

from __future__ import annotations

from agent.checkpoint import Vllm
from agent.collectors.vllm import VllmProbe
from agent.lifecycle import LifecycleState


class LifecycleTracker:
    """Remembers since when the engine has made no progress; everything else is per call."""

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self._stalled_since: float | None = None

    def update(
        self, probe: VllmProbe, process_pid: int | None, now: float
    ) -> tuple[LifecycleState, str]:
        """Return the state and why, for a probe taken at monotonic `now`."""
        if probe.vllm is None:
            self._stalled_since = None
            return unreachable_state(probe, process_pid)
        return serving_state(probe.vllm, self._stalled_for(probe.vllm, now), self.stall_after_s)

    def _stalled_for(self, vllm: Vllm, now: float) -> float:
        if vllm.forward_progress is not False:
            self._stalled_since = None
            return 0.0
        if self._stalled_since is None:
            # The counters already stood still over the whole interval just measured.
            self._stalled_since = now - (vllm.interval_s or 0.0)
        return now - self._stalled_since


def unreachable_state(probe: VllmProbe, process_pid: int | None) -> tuple[LifecycleState, str]:
    reason = probe.missing.get("vllm", "vLLM is unreachable")
    if probe.timed_out:
        return LifecycleState.DEGRADED, reason
    if process_pid is not None:
        return LifecycleState.INITIALIZING, f"vLLM process {process_pid} is alive; {reason}"
    return LifecycleState.STOPPED, f"{reason}; no vLLM process"


def serving_state(vllm: Vllm, stalled_s: float, stall_after_s: float) -> tuple[LifecycleState, str]:
    health = vllm.health
    if health.status_code == 503:
        if "scaling" in (health.error or ""):
            return LifecycleState.DEGRADED, f"vLLM is scaling: {health.error}"
        return LifecycleState.FAILED_ENGINE_DEAD, "/health answered 503: the engine is dead"
    if vllm.sleep_state not in (None, "awake"):
        return LifecycleState.SLEEPING, f"engine sleep state is {vllm.sleep_state}"
    running = vllm.requests_running or 0
    if running > 0 and stalled_s >= stall_after_s:
        return (
            LifecycleState.DEGRADED,
            f"no forward progress for {stalled_s:.0f} s with {running:.0f} requests running",
        )
    if not health.ok:
        return LifecycleState.DEGRADED, f"/health failed: {health.error}"
    return LifecycleState.SERVING, _serving_detail(vllm)


def _serving_detail(vllm: Vllm) -> str:
    if vllm.requests_running is None:
        return "/health is ok; no engine metrics"
    detail = f"{vllm.requests_running:.0f} running, {vllm.requests_waiting or 0:.0f} waiting"
    if vllm.kv_cache_usage_pct is not None:
        detail += f", KV cache {vllm.kv_cache_usage_pct:.0f} %"
    return detail
