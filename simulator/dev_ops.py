"""What vLLM's development endpoints do to a running server (VLLM_SERVER_DEV_MODE=1).

Each function changes the simulated server the way the real endpoint changes vLLM, logs
what vLLM logs, and returns the JSON the endpoint answers (None for an empty 200).
"""

from __future__ import annotations

from typing import Any

from simulator import failures
from simulator.catalog import GIB
from simulator.engine import Phase, SimulatedVllm
from simulator.run import ServerRun

PAUSE_MODES = ("abort", "wait", "keep")
PREFIX_COLD_S = 30.0  # after a reset the cache refills; hits come back over this long


class DevOpError(Exception):
    """The request cannot be honoured; `status` is the HTTP status vLLM answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def sleep(sim: SimulatedVllm, level: int) -> None:
    run = _serving_run(sim)
    if not run.args.enable_sleep_mode:
        raise DevOpError(500, "Internal Server Error")
    if level not in (1, 2):
        raise DevOpError(400, f"level must be 1 or 2, got {level}")
    if run.sleep_level:
        return
    assert run.scheduler is not None
    run.scheduler.abort_all(sim.t)
    before = run.process_gpu_bytes()
    run.sleep_level = level
    after = run.process_gpu_bytes()
    sim.emit(failures.fell_asleep(0.9 + 0.2 * level, before - after, after), sim.t)
    sim.place_gpu_processes()
    sim.version += 1


def wake_up(sim: SimulatedVllm, tags: list[str] | None) -> None:
    run = _serving_run(sim)
    if not run.sleep_level:
        return
    run.sleep_level = 0
    sim.emit(failures.woke_up(1.7 + 0.5 * run.model.params_b / 8, tags), sim.t)
    sim.place_gpu_processes()
    sim.version += 1


def is_sleeping(sim: SimulatedVllm) -> dict[str, Any]:
    return {"is_sleeping": bool(_serving_run(sim).sleep_level)}


def pause(sim: SimulatedVllm, mode: str) -> dict[str, Any]:
    run = _serving_run(sim)
    if mode not in PAUSE_MODES:
        raise DevOpError(400, f"mode must be one of {', '.join(PAUSE_MODES)}")
    if mode == "abort":
        assert run.scheduler is not None
        run.scheduler.abort_all(sim.t)
    run.paused = mode
    sim.version += 1
    return {"status": "paused"}


def resume(sim: SimulatedVllm) -> dict[str, Any]:
    _serving_run(sim).paused = None
    sim.version += 1
    return {"status": "resumed"}


def is_paused(sim: SimulatedVllm) -> dict[str, Any]:
    return {"is_paused": _serving_run(sim).paused is not None}


def reset_prefix_cache(sim: SimulatedVllm) -> None:
    run = _serving_run(sim)
    assert run.scheduler is not None
    run.scheduler.prefix_cold_until = sim.t + PREFIX_COLD_S


def server_info(sim: SimulatedVllm) -> dict[str, Any]:
    run = _serving_run(sim)
    config = run.args.as_dict()
    config["num_gpu_blocks"] = run.plan.num_gpu_blocks if run.plan else None
    gpu = run.gpu
    return {
        "vllm_config": config,
        "vllm_env": {k: v for k, v in sorted(sim.env.items()) if "KEY" not in k},
        "system_env": {
            "gpu_models": f"{len(sim.gpus)}x {gpu.name}",
            "gpu_memory_gib": round(gpu.memory_total_bytes / GIB, 2),
            "driver_version": sim.nvml.driver_version,
            "python_version": "3.12.12",
        },
    }


def _serving_run(sim: SimulatedVllm) -> ServerRun:
    if sim.phase is not Phase.SERVING or sim.run is None:
        raise DevOpError(503, "The engine is not running")
    return sim.run
