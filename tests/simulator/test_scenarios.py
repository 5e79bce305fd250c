"""Each required scenario shows the precursors a real server shows, then its failure."""

from __future__ import annotations

import itertools

from simulator.engine import Phase, SimulatedVllm
from simulator.failures import ENGINE_DEAD, SHM_HANG
from simulator.gpu import HW_THERMAL_SLOWDOWN, SW_THERMAL_SLOWDOWN
from tests.simulator.support import (
    TICK_S,
    log_count,
    make_sim,
    run_for,
    run_to_uptime,
    run_until,
    snapshot,
    uptime,
    window_quantile,
)

H100_BYTES = 85_520_809_984


def generation_tokens(sim: SimulatedVllm) -> int:
    return sim.run.stats.generation_tokens


def test_it_runs_healthy_without_preemptions_or_errors() -> None:
    sim = make_sim("healthy")
    run_to_uptime(sim, 300)
    stats = sim.run.stats
    assert sim.phase is Phase.SERVING
    assert stats.preemptions == 0 and sim.run.scheduler.kv_usage < 0.6
    assert sum(stats.finished.values()) > 800
    assert not [line for line in sim.log.lines if " ERROR " in line]


def test_it_fills_the_kv_cache_then_preempts_and_queues() -> None:
    sim = make_sim("kv_cache_exhaustion")
    run_to_uptime(sim, 5)
    sched, stats = sim.run.scheduler, sim.run.stats
    itl, queue = (
        stats.hist[f"vllm:{n}_seconds"] for n in ("inter_token_latency", "request_queue_time")
    )
    itl_calm, queue_calm = snapshot(itl), snapshot(queue)
    run_to_uptime(sim, 30)  # the traffic starts changing here
    itl_p50, itl_p99 = window_quantile(itl_calm, itl, 0.5), window_quantile(itl_calm, itl, 0.99)
    queue_p99 = window_quantile(queue_calm, queue, 0.99)
    kv_calm = sched.kv_usage
    run_to_uptime(sim, 90)
    assert kv_calm < sched.kv_usage < 1.0 and stats.preemptions == 0  # climbing, no storm yet
    run_to_uptime(sim, 150)
    preempted, waiting = stats.preemptions, len(sched.waiting)
    itl_storm, queue_storm = snapshot(itl), snapshot(queue)
    run_to_uptime(sim, 240)
    assert sched.kv_usage > 0.95
    assert 0 < preempted < stats.preemptions  # preemptions keep climbing
    assert 0 < waiting < len(sched.waiting)  # the queue grows ...
    assert len(sched.running) < 300  # ... while running plateaus
    # Bigger batches over a full cache slow every step; recomputed prefills add slow steps.
    assert window_quantile(itl_storm, itl, 0.5) > 1.4 * itl_p50
    assert window_quantile(itl_storm, itl, 0.99) > 1.15 * itl_p99
    assert window_quantile(queue_storm, queue, 0.99) > 10 * queue_p99


def test_it_leaks_gpu_memory_into_a_cuda_oom_then_exits_and_restarts() -> None:
    sim = make_sim("memory_leak_oom")
    gpu = sim.gpus[0]
    run_to_uptime(sim, 30)
    readings = []
    while sim.phase is Phase.SERVING:
        readings.append(gpu.memory_used_bytes)
        run_for(sim, 10)
    assert readings[0] < 0.94 * H100_BYTES
    assert all(b > a for a, b in itertools.pairwise(readings))  # steady rise
    assert readings[-1] > 0.97 * H100_BYTES
    assert 150 < uptime(sim) < 220  # within a few minutes at speed 1
    assert sim.phase is Phase.DEAD  # /health answers 503
    assert log_count(sim, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate") == 1
    assert log_count(sim, "EngineCore encountered a fatal error.") == 1
    assert log_count(sim, ENGINE_DEAD) == 1
    died, old_pid = sim.t, sim.run.proc.pid
    run_until(sim, lambda s: s.phase is Phase.DOWN, 6)
    assert 4.5 <= sim.t - died <= 5.5 and not sim.run.proc.is_running()
    assert log_count(sim, "AsyncLLMEngine has failed, terminating server process") == 1
    run_until(sim, lambda s: s.phase is Phase.SERVING, 40)
    assert sim.run.proc.pid != old_pid
    assert gpu.memory_used_bytes < 0.94 * H100_BYTES  # the restart cleared the leak


def test_it_stalls_with_health_ok_before_the_engine_dies() -> None:
    sim = make_sim("engine_death")
    run_to_uptime(sim, 85)
    tokens, running = generation_tokens(sim), sim.run.running
    run_to_uptime(sim, 145)
    assert running > 0 and generation_tokens(sim) == tokens  # no progress ...
    assert sim.phase is Phase.SERVING  # ... while /health still says 200
    assert log_count(sim, SHM_HANG) == 1
    run_to_uptime(sim, 150 + TICK_S)
    assert sim.phase is Phase.DEAD
    assert log_count(sim, "TimeoutError: RPC call to execute_model timed out.") == 1
    assert log_count(sim, ENGINE_DEAD) == 1
    run_for(sim, 5)
    assert sim.phase is Phase.DOWN


def test_it_hangs_in_nccl_with_gpus_pinned_then_the_watchdog_kills_it() -> None:
    sim = make_sim("nccl_hang")
    assert len(sim.gpus) == 4 and len(sim.run.proc.children(recursive=True)) == 5
    run_to_uptime(sim, 95)
    tokens = generation_tokens(sim)
    run_to_uptime(sim, 235)
    assert sim.run.running > 0 and generation_tokens(sim) == tokens
    assert all(g.utilization_gpu == 100 for g in sim.gpus)
    assert sim.phase is Phase.SERVING
    assert log_count(sim, SHM_HANG) == 2  # every 60 s
    run_to_uptime(sim, 240 + TICK_S)
    assert sim.phase is Phase.DEAD
    assert log_count(sim, "Watchdog caught collective operation timeout: WorkNCCL(") == 1
    assert log_count(sim, "Timeout(ms)=150000) ran for 150059 milliseconds") == 1
    assert (
        log_count(sim, "To avoid data inconsistency, we are taking the entire process down.") == 1
    )
    assert log_count(sim, "Worker proc Worker_TP1 died unexpectedly") >= 1
    assert log_count(sim, ENGINE_DEAD) == 1


def test_it_throttles_a_hot_gpu_and_slows_the_engine() -> None:
    sim = make_sim("thermal_throttling")
    gpu = sim.gpus[0]
    run_to_uptime(sim, 40)
    itl = sim.run.stats.hist["vllm:inter_token_latency_seconds"]
    cool = snapshot(itl)
    run_to_uptime(sim, 100)
    cool_itl = window_quantile(cool, itl, 0.5)
    assert gpu.clocks_event_reasons & (SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN) == 0
    run_to_uptime(sim, 200)
    hot = snapshot(itl)
    run_to_uptime(sim, 260)
    assert gpu.temperature_c > 87
    assert gpu.clocks_event_reasons & SW_THERMAL_SLOWDOWN
    assert gpu.sm_clock_mhz < 0.9 * gpu.spec.max_sm_clock_mhz
    assert window_quantile(hot, itl, 0.5) > 1.3 * cool_itl
    run_to_uptime(sim, 415)  # cooling back since 300 s
    assert gpu.clocks_event_reasons == 0 and gpu.temperature_c < 80


def test_it_queues_during_a_load_spike_and_recovers() -> None:
    sim = make_sim("load_spike")
    run_to_uptime(sim, 10)
    ttft = sim.run.stats.hist["vllm:time_to_first_token_seconds"]
    calm = snapshot(ttft)
    run_to_uptime(sim, 55)
    calm_p99 = window_quantile(calm, ttft, 0.99)
    run_to_uptime(sim, 120)
    spike = snapshot(ttft)
    run_to_uptime(sim, 170)
    assert window_quantile(spike, ttft, 0.99) > 3 * calm_p99
    run_to_uptime(sim, 290)
    assert sim.run.waiting < 20 and sim.phase is Phase.SERVING
