"""Startup, restarts with other arguments, and startup failures of a simulated server."""

from __future__ import annotations

from simulator.catalog import GIB
from simulator.engine import Phase, SimulatedVllm
from simulator.failures import SHM_HANG
from tests.simulator.support import (
    log_count,
    make_sim,
    render,
    run_for,
    run_to_uptime,
    run_until,
    samples,
    scenario_from,
    serving,
    value,
)

STARTUP_MESSAGES = (
    "vLLM server version 0.24.0, serving model meta-llama/Llama-3.1-8B-Instruct",
    "non-default args: {'model': 'meta-llama/Llama-3.1-8B-Instruct', 'max_model_len': 32768}",
    "Resolved architecture: LlamaForCausalLM",
    "Initializing a V1 LLM engine (v0.24.0) with config: ",
    "Starting to load model meta-llama/Llama-3.1-8B-Instruct...",
    "Model loading took 14.96 GiB memory and ",
    "Dynamo bytecode transform time: ",
    "Initial profiling/warmup run took ",
    "Available KV cache memory: 54.40 GiB",
    "GPU KV cache size: 445,632 tokens",
    "Maximum concurrency for 32,768 tokens per request: 13.60x",
    "Capturing CUDA graphs (decode, FULL): 100%",
    "Graph capturing finished in ",
    "init engine (profile, create kv cache, warmup model) took ",
    "Starting vLLM server on http://0.0.0.0:8000",
    "INFO:     Application startup complete.",
)


def test_it_logs_the_startup_sequence_in_order_before_serving() -> None:
    sim = make_sim("healthy")
    assert not sim.listening
    run_until(sim, serving, 30)
    lines = list(sim.log.lines)
    positions = [next(i for i, line in enumerate(lines) if m in line) for m in STARTUP_MESSAGES]
    assert positions == sorted(positions)
    assert lines[0].startswith(f"(APIServer pid={sim.run.proc.pid}) INFO 06-15 ")
    assert "(EngineCore pid=" in lines[positions[4]]
    assert 2 < sim.t < 8  # ~40 s of a real H100 startup, at the demo's scale of 0.1


def test_it_starts_as_slowly_as_a_real_server_at_full_scale() -> None:
    sim = make_sim(scenario_from({"host": {"startup_scale": 1.0}}))
    run_until(sim, serving, 120)
    assert 30 < sim.t < 60


def test_it_resets_every_counter_and_created_time_on_restart() -> None:
    sim = make_sim("healthy")
    run_to_uptime(sim, 60)
    before = samples(render(sim))
    sim.restart()
    assert sim.phase is Phase.STARTING and not sim.listening
    assert log_count(sim, "[shutdown] API server: shutdown triggered") == 1
    run_until(sim, serving, 30)
    after = samples(render(sim))
    assert value(after, "vllm:generation_tokens_total") == 0
    assert value(before, "vllm:generation_tokens_total") > 10_000
    for name in ("process_start_time_seconds", "vllm:generation_tokens_created"):
        assert value(after, name) > value(before, name)
    assert value(after, "http_request_duration_highr_seconds_count") == 0


def test_it_lowers_kv_pressure_after_a_restart_with_fewer_sequences() -> None:
    def kv_usage(max_num_seqs: int | None) -> tuple[float, int]:
        sim = make_sim("kv_cache_exhaustion")
        if max_num_seqs:
            sim.restart(args={"max_num_seqs": max_num_seqs})
        run_to_uptime(sim, 200)
        readings = []
        for _ in range(20):
            run_for(sim, 2)
            readings.append(sim.run.scheduler.kv_usage)
        return sum(readings) / len(readings), sim.run.stats.preemptions

    default_kv, default_preemptions = kv_usage(None)
    small_kv, small_preemptions = kv_usage(64)
    assert default_kv > 0.95 and default_preemptions > 0
    assert small_kv < 0.6 and small_preemptions == 0


def test_it_caps_running_requests_at_max_num_seqs_and_logs_the_argument() -> None:
    sim = make_sim("load_spike")
    sim.restart(args={"max-num-seqs": 32, "gpu_memory_utilization": 0.85})
    run_to_uptime(sim, 150)
    assert len(sim.run.scheduler.running) == 32
    assert log_count(sim, "'max_num_seqs': 32, 'gpu_memory_utilization': 0.85") == 1
    assert sim.run.plan.num_gpu_blocks < 27852


def test_it_doubles_the_kv_cache_with_fp8() -> None:
    sim = make_sim("healthy")
    sim.restart(args={"kv_cache_dtype": "fp8"})
    assert sim.run.plan.num_gpu_blocks > 2 * 27852 - 10


def test_it_skips_graph_capture_with_enforce_eager() -> None:
    sim = make_sim("healthy")
    sim.restart(args={"enforce_eager": True})
    run_until(sim, serving, 30)
    assert log_count(sim, "Cudagraph is disabled under eager mode") == 1
    assert log_count(sim, "Capturing CUDA graphs") == 0


def failed_start(engine_args: dict[str, object]) -> SimulatedVllm:
    sim = make_sim(scenario_from({"engine_args": engine_args}))
    run_until(sim, lambda s: s.phase is Phase.DOWN, 30)
    assert log_count(sim, "EngineCore failed to start.") == 1
    assert log_count(sim, "RuntimeError: Engine core initialization failed.") == 1
    assert not sim.run.proc.is_running()
    return sim


def test_it_fails_to_start_when_the_kv_cache_cannot_hold_max_model_len() -> None:
    sim = failed_start({"max_model_len": 131072, "gpu_memory_utilization": 0.3})
    assert (
        log_count(sim, "To serve at least one request with the model's max seq len (131072)") == 1
    )
    assert log_count(sim, "the estimated maximum model length is ") == 1


def test_it_fails_to_start_without_memory_for_the_kv_cache() -> None:
    sim = failed_start({"gpu_memory_utilization": 0.2})
    assert log_count(sim, "ValueError: No available memory for the cache blocks.") == 1


def test_it_dies_of_a_foreign_process_and_cannot_start_until_it_is_gone() -> None:
    sim = make_sim(scenario_from({"lifecycle": {"restart_after_death_s": 10}}))
    run_to_uptime(sim, 5)
    sim.add_external_process(pid=999, used_bytes=12 * GIB)  # pushes used memory past the total
    run_for(sim, 1)
    assert sim.phase is Phase.DEAD
    assert log_count(sim, "torch.OutOfMemoryError: CUDA out of memory.") == 1
    run_for(sim, 25)  # the supervisor's restart finds the GPU taken
    assert sim.phase is Phase.DOWN
    assert log_count(sim, "ValueError: Free memory on device cuda:0 (") >= 1  # crash-looping
    assert log_count(sim, "is less than desired GPU memory utilization (0.92, 73.28 GiB)") >= 1
    sim.remove_external_process(999)
    run_until(sim, serving, 30)


def test_it_keeps_health_ok_but_logs_the_hang_every_minute() -> None:
    sim = make_sim(scenario_from({"effects": [{"kind": "engine_stall", "at_s": 20}]}))
    run_to_uptime(sim, 20 + 185)
    assert sim.phase is Phase.SERVING
    assert log_count(sim, SHM_HANG) == 3


def test_it_stays_up_answering_503_with_keep_alive_on_engine_death() -> None:
    data = {
        "env": {"VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": "1"},
        "effects": [{"kind": "engine_death", "at_s": 10, "cause": "illegal_memory_access"}],
    }
    sim = make_sim(scenario_from(data))
    run_to_uptime(sim, 11)
    run_for(sim, 60)
    assert sim.phase is Phase.DEAD and sim.listening
    assert log_count(sim, "RuntimeError: CUDA error: an illegal memory access was encountered") == 1
