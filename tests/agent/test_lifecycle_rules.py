"""Lifecycle decisions from probes, with the clock passed in."""

from __future__ import annotations

from agent.checkpoint import Health, Vllm
from agent.collectors.lifecycle import LifecycleTracker
from agent.collectors.vllm import VllmProbe
from agent.lifecycle import LifecycleState


def _probe(
    progress: bool | None, running: float = 12, interval_s: float = 5.0, **health: object
) -> VllmProbe:
    vllm = Vllm(
        url="http://127.0.0.1:8000",
        health=Health(**{"ok": True, "status_code": 200, **health}),  # type: ignore[arg-type]
        requests_running=running,
        requests_waiting=0,
        forward_progress=progress,
        interval_s=interval_s,
    )
    return VllmProbe(vllm=vllm)


def test_it_calls_a_long_stall_with_running_requests_degraded() -> None:
    tracker = LifecycleTracker(stall_after_s=15)
    assert tracker.update(_probe(True), 4242, now=100)[0] == LifecycleState.SERVING
    # The counters stood still during the interval before now=105, and since.
    assert tracker.update(_probe(False), 4242, now=105)[0] == LifecycleState.SERVING
    assert tracker.update(_probe(False), 4242, now=110)[0] == LifecycleState.SERVING
    state, detail = tracker.update(_probe(False), 4242, now=115)
    assert state == LifecycleState.DEGRADED
    assert detail == "no forward progress for 15 s with 12 requests running"


def test_it_recovers_as_soon_as_tokens_flow_again() -> None:
    tracker = LifecycleTracker(stall_after_s=10)
    tracker.update(_probe(False), 4242, now=100)
    assert tracker.update(_probe(False), 4242, now=110)[0] == LifecycleState.DEGRADED
    assert tracker.update(_probe(True), 4242, now=115)[0] == LifecycleState.SERVING
    # A new stall starts its own clock.
    assert tracker.update(_probe(False), 4242, now=120)[0] == LifecycleState.SERVING


def test_it_does_not_count_unknown_progress_as_a_stall() -> None:
    tracker = LifecycleTracker(stall_after_s=10)
    tracker.update(_probe(False), 4242, now=100)
    tracker.update(_probe(None), 4242, now=105)  # restart or first scrape: clock resets
    assert tracker.update(_probe(False), 4242, now=112)[0] == LifecycleState.SERVING


def test_it_prefers_engine_death_and_sleep_over_stalls() -> None:
    tracker = LifecycleTracker(stall_after_s=0)
    dead = _probe(False, ok=False, status_code=503, error="HTTP 503")
    assert tracker.update(dead, 4242, now=1)[0] == LifecycleState.FAILED_ENGINE_DEAD
    asleep = _probe(None, running=0)
    assert asleep.vllm is not None
    asleep.vllm.sleep_state = "weights_offloaded"
    state, detail = tracker.update(asleep, 4242, now=2)
    assert (state, detail) == (LifecycleState.SLEEPING, "engine sleep state is weights_offloaded")


def test_it_calls_a_failing_health_check_degraded() -> None:
    probe = _probe(True, ok=False, status_code=None, error="no answer within 2 s")
    state, detail = LifecycleTracker(15).update(probe, 4242, now=1)
    assert (state, detail) == (LifecycleState.DEGRADED, "/health failed: no answer within 2 s")


def test_it_tells_starting_from_stopped_from_wedged_when_unreachable() -> None:
    refused = VllmProbe(vllm=None, missing={"vllm": "http://x: cannot connect"}, refused=True)
    timed_out = VllmProbe(vllm=None, missing={"vllm": "http://x: no answer"}, timed_out=True)
    tracker = LifecycleTracker(15)

    assert tracker.update(refused, 4242, now=1)[0] == LifecycleState.INITIALIZING
    assert tracker.update(refused, None, now=2)[0] == LifecycleState.STOPPED
    assert tracker.update(timed_out, 4242, now=3)[0] == LifecycleState.DEGRADED
