"""Actions on a host of the in-process simulated fleet: the same API restarts a simulated vLLM."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from agent.checkpoint import Checkpoint, decode
from simulator.engine import Phase
from simulator.fleet import Fleet, FleetConfig, run_fleet
from simulator.host import SimulatedHost


async def _post(
    session: aiohttp.ClientSession, host: dict[str, Any], action: str, **params: Any
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {host['token']}"}
    body = {"action": action, "params": params, "idempotency_key": f"{action}-{params}"}
    async with session.post(host["agent_url"] + "/v1/actions", json=body, headers=headers) as r:
        assert r.status == 202, await r.text()
        job: dict[str, Any] = await r.json()
    for _ in range(200):
        async with session.get(f"{host['agent_url']}/v1/actions/{job['id']}", headers=headers) as r:
            job = await r.json()
        if job["status"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"{action} still {job['status']}")


async def _checkpoint(session: aiohttp.ClientSession, host: dict[str, Any]) -> Checkpoint:
    headers = {"Authorization": f"Bearer {host['token']}"}
    async with session.get(host["agent_url"] + "/v1/checkpoint", headers=headers) as resp:
        return decode(await resp.read())


def _only_host(fleet: Fleet) -> SimulatedHost:
    (host,) = fleet.hosts
    return host


async def test_it_restarts_a_simulated_host_with_changed_arguments() -> None:
    config = FleetConfig(hosts=1, seed=3, scenarios=["healthy"], speed=0)
    async with run_fleet(config) as fleet, aiohttp.ClientSession() as session:
        entry, host = fleet.manifest["hosts"][0], _only_host(fleet)
        lines = []
        host.supervisor.logs.subscribe(lambda line: lines.append(line.text))
        await fleet.advance(30)
        before = await _checkpoint(session, entry)
        old_pid = host.sim.run.proc.pid

        job = await _post(session, entry, "restart_with_args", max_num_seqs=64, enforce_eager=True)

        assert job["status"] == "succeeded", job
        assert host.sim.phase is Phase.STARTING and host.sim.given.max_num_seqs == 64
        await fleet.advance(30)
        after = await _checkpoint(session, entry)
    assert before.engine_args == {"max_model_len": 32768}
    assert after.mode == "supervise" and after.lifecycle_state == "serving"
    assert after.engine_args == {"max_model_len": 32768, "max_num_seqs": 64, "enforce_eager": True}
    assert after.process is not None and after.process.pid == job["result"]["pid"] != old_pid
    assert any("Cudagraph is disabled under eager mode" in line for line in lines)
    exit_at = lines.index(f"sentinel-agent: vLLM process {old_pid} exited with code 0 "
                          "(stopped by the agent)")  # fmt: skip
    assert lines[exit_at + 1].startswith(
        f"sentinel-agent: vLLM process {after.process.pid} started"
    )


async def test_it_ends_a_foreign_gpu_process_on_a_simulated_host_and_spares_vllm() -> None:
    config = FleetConfig(hosts=1, seed=3, scenarios=["foreign_process_oom"], speed=0)
    async with run_fleet(config) as fleet, aiohttp.ClientSession() as session:
        entry, host = fleet.manifest["hosts"][0], _only_host(fleet)
        await fleet.advance(100)  # the stray notebook holds 5.5 GiB from 60 s of uptime
        host.sim.add_external_process(31337, 2 * 1024**3)
        engine_pid = host.sim.run.proc.kids[0].pid
        assert {p.pid for p in host.sim.gpus[0].processes} == {engine_pid, 48213, 31337}

        job = await _post(session, entry, "free_gpu_memory", term_timeout_s=1)

        await fleet.advance(5)
        left = {p.pid for p in host.sim.gpus[0].processes}
    assert job["status"] == "succeeded", job
    assert sorted(job["result"]["terminated"]) == [31337, 48213]
    assert left == {engine_pid} and host.sim.phase is Phase.SERVING


async def test_it_stops_and_starts_a_simulated_host() -> None:
    config = FleetConfig(hosts=1, seed=3, scenarios=["healthy"], speed=0)
    async with run_fleet(config) as fleet, aiohttp.ClientSession() as session:
        entry, host = fleet.manifest["hosts"][0], _only_host(fleet)
        await fleet.advance(30)
        drained = await _post(session, entry, "drain", timeout_s=1)
        stopped = await _checkpoint(session, entry)
        await host.supervisor.start()
        await fleet.advance(30)
        back = await _checkpoint(session, entry)
    assert drained["result"]["method"] == "sigterm" and drained["result"]["returncode"] == 0
    assert stopped.lifecycle_state == "stopped" and stopped.process is None
    assert back.lifecycle_state == "serving"
