"""The real Sentinel agent, beside a simulated host, collects checkpoints with the right values."""

from __future__ import annotations

import asyncio

import aiohttp

from agent.checkpoint import Checkpoint, decode
from agent.lifecycle import LifecycleState
from simulator.engine import Phase
from simulator.fleet import FleetConfig, run_fleet
from tests.simulator.support import EPOCH


async def checkpoint(session: aiohttp.ClientSession, host: dict[str, str]) -> Checkpoint:
    headers = {"Authorization": f"Bearer {host['token']}"}
    async with session.get(host["agent_url"] + "/v1/checkpoint", headers=headers) as resp:
        assert resp.status == 200
        return decode(await resp.read())


async def test_it_lets_the_real_agent_read_the_simulated_host() -> None:
    config = FleetConfig(hosts=1, seed=4, scenarios=["healthy"], speed=0)
    async with run_fleet(config) as fleet, aiohttp.ClientSession() as session:
        host = fleet.manifest["hosts"][0]
        sim = fleet.hosts[0].sim
        starting = await checkpoint(session, host)
        assert starting.lifecycle_state is LifecycleState.INITIALIZING  # refused, process alive
        await fleet.advance(60)
        await checkpoint(session, host)
        await fleet.advance(10)
        cp = await checkpoint(session, host)

        assert cp.host == "gpu-01" and cp.gpu_backend == "simulated" and not cp.missing
        assert cp.lifecycle_state is LifecycleState.SERVING
        vllm, run = cp.vllm, sim.run
        assert vllm is not None and vllm.health.status_code == 200
        assert vllm.model_name == "meta-llama/Llama-3.1-8B-Instruct"
        assert vllm.cache.num_gpu_blocks == 27852 and vllm.cache.kv_cache_size_tokens == 445632
        assert vllm.requests_running == len(run.scheduler.running)
        assert abs(vllm.kv_cache_usage_pct - 100 * run.scheduler.kv_usage) < 1e-3
        assert vllm.totals["generation_tokens"] == run.stats.generation_tokens
        assert vllm.forward_progress is True and vllm.rates.generation_tokens_per_s > 0

        (gpu,) = cp.gpus
        assert gpu.name == "NVIDIA H100 80GB HBM3"
        assert gpu.memory_used_bytes == sim.gpus[0].memory_used_bytes
        assert gpu.utilization_gpu_pct == sim.gpus[0].utilization_gpu
        assert [p.pid for p in gpu.processes] == [run.proc.kids[0].pid]

        assert cp.process is not None
        assert cp.process.pid == run.proc.pid and cp.process.children == 1
        assert cp.process.rss_bytes == sum(p.rss_bytes for p in run.proc.walk())


async def test_it_lets_the_agent_see_an_engine_death_and_the_restart() -> None:
    config = FleetConfig(hosts=1, seed=4, scenarios=["memory_leak_oom"], speed=0, epoch=EPOCH)
    async with run_fleet(config) as fleet, aiohttp.ClientSession() as session:
        host, sim = fleet.manifest["hosts"][0], fleet.hosts[0].sim
        while sim.phase is not Phase.DEAD:
            await fleet.advance(5)
        dead = await checkpoint(session, host)
        assert dead.lifecycle_state.is_failed
        await fleet.advance(6)
        await asyncio.sleep(0.6)  # the exception monitor closes a traceback after 0.5 s of quiet
        gone = await checkpoint(session, host)
        # The process is gone, but the server failed and stays failed, of its root cause.
        assert gone.lifecycle_state is LifecycleState.FAILED_CUDA_OOM and gone.vllm is None
        assert "cuda_oom" in {e.category for e in gone.errors}
        await fleet.advance(30)
        back = await checkpoint(session, host)
        assert back.lifecycle_state is LifecycleState.SERVING
        assert back.process is not None and back.process.pid == sim.run.proc.pid != dead.process.pid
