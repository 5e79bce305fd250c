"""POST /v1/actions over real HTTP, against an agent supervising the simulated vLLM executable."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil

from agent.agent import Agent
from agent.checkpoint import decode
from agent.processes import OsSignaller
from agent.server import start_server
from simulator.gpu import GpuProcessUse
from simulator.nvml import SimulatedNvml, idle_gpu
from tests.agent.conftest import TOKEN, make_config
from tests.agent.test_supervisor_support import (
    Recorder,
    sim_env,
    supervisor,
    until_metric,
)
from tests.ports import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}"}
GIB = 1024**3


@dataclass
class Served:
    agent: Agent
    http: aiohttp.ClientSession
    vllm_port: int

    async def post(self, action: str, key: str, **params: Any) -> tuple[int, dict[str, Any]]:
        body = {"action": action, "params": params, "idempotency_key": key}
        async with self.http.post("/v1/actions", json=body) as resp:
            return resp.status, await resp.json()

    async def finished(self, job_id: str) -> dict[str, Any]:
        """Return the job once it has succeeded or failed."""
        for _ in range(600):
            async with self.http.get(f"/v1/actions/{job_id}") as resp:
                job: dict[str, Any] = await resp.json()
            if job["status"] in ("succeeded", "failed"):
                return job
            await asyncio.sleep(0.025)
        raise AssertionError(f"job {job_id} still {job['status']}")

    async def run(self, action: str, **params: Any) -> dict[str, Any]:
        status, job = await self.post(action, f"key-{action}-{os.urandom(4).hex()}", **params)
        assert status == 202, job
        return await self.finished(job["id"])

    async def serving(self) -> None:
        await until_metric(self.vllm_port, "vllm:num_requests_running", lambda running: True)


@contextlib.asynccontextmanager
async def served_agent(
    *vllm_args: str, start: bool = True, env: dict[str, str | None] | None = None, **agent: Any
) -> AsyncIterator[Served]:
    port = free_port()
    backend = "simulated" if "nvml" in agent else "none"
    config = make_config(f"http://127.0.0.1:{port}", gpu_backend=backend)
    vllm = supervisor(port, *vllm_args, env=env)
    served = Agent(config, vllm=vllm, **agent)
    runner, agent_port = await start_server(served, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{agent_port}"
    try:
        if start:
            await served.start()
        async with aiohttp.ClientSession(base, headers=AUTH) as http:
            yield Served(served, http, port)
    finally:
        await runner.cleanup()
        await served.close()


async def test_it_runs_an_action_once_per_idempotency_key() -> None:
    async with served_agent() as s:
        seen = Recorder(s.agent.logs)
        first_pid = s.agent.vllm.pid
        status, job = await s.post("restart_with_args", "mitigation-17", max_num_seqs=64)
        again_status, again = await s.post("restart_with_args", "mitigation-17", max_num_seqs=64)
        done = await s.finished(job["id"])
        later_status, later = await s.post("restart_with_args", "mitigation-17", max_num_seqs=64)
        async with s.http.get("/v1/checkpoint") as resp:
            cp = decode(await resp.read())

    assert (status, job["status"], job["action"]) == (202, "pending", "restart_with_args")
    assert (again_status, again["id"]) == (200, job["id"])
    assert done["status"] == "succeeded", done
    assert (later_status, later) == (200, done)
    assert done["result"]["pid_before"] == first_pid != done["result"]["pid"]
    assert done["result"]["engine_args"]["max_num_seqs"] == 64
    starts = [t for t in seen.texts() if t.startswith("sentinel-agent: vLLM process")]
    assert len([t for t in starts if " started: " in t]) == 1  # however often the key came
    assert cp.mode == "supervise" and cp.engine_args["max_num_seqs"] == 64


async def test_it_refuses_unknown_actions_and_bad_parameters_and_runs_nothing() -> None:
    refusals = [
        ("reboot", {}, "unknown action 'reboot'; available: drain, free_gpu_memory, "),
        ("restart_with_args", {"max_num_seqs": 0},
         "max_num_seqs must be an integer from 1 to 65536 or null, got 0"),
        ("restart_with_args", {"max_num_seqs": 8.5}, "max_num_seqs must be an integer"),
        ("restart_with_args", {"enforce_eager": "yes"},
         'enforce_eager must be true or false or null, got "yes"'),
        ("restart_with_args", {"gpu_memory_utilization": 1.5},
         "gpu_memory_utilization must be a number from 0.05 to 0.99 or null, got 1.5"),
        ("restart_with_args", {"kv_cache_dtype": "int4"},
         'kv_cache_dtype must be one of auto, fp8, fp8_e4m3, fp8_e5m2, float16, bfloat16 or null'),
        ("restart_with_args", {"pipeline_parallel_size": 2},
         "restart_with_args: unknown parameter 'pipeline_parallel_size'; allowed: max_num_seqs, "),
        ("restart_with_args", {}, "restart_with_args needs at least one parameter of: "),
        ("restart_with_env", {"LD_PRELOAD": "/tmp/evil.so"},
         "restart_with_env: unknown parameter 'LD_PRELOAD'; allowed: NCCL_P2P_DISABLE, "),
        ("restart_with_env", {"NCCL_SOCKET_IFNAME": "eth0; rm -rf /"},
         "NCCL_SOCKET_IFNAME must be a string matching"),
        ("sleep", {"level": 3}, "level must be an integer from 1 to 2, got 3"),
        ("wake_up", {"tags": ["weights", "everything"]}, "tags must be one of weights, kv_cache"),
        ("free_gpu_memory", {}, "free_gpu_memory: no GPU backend to list GPU processes with"),
    ]  # fmt: skip
    async with served_agent(start=False) as s:
        for i, (action, params, message) in enumerate(refusals):
            status, answer = await s.post(action, f"key-{i}", **params)
            assert status == 400 and message in answer["error"], (action, params, answer)
        await _refuses_malformed_requests(s.http)
        status, _ = await s.post("restart", "taken")
        status_again, answer = await s.post("drain", "taken")
        async with s.http.get("/v1/actions") as resp:
            listing = await resp.json()
    assert (status, status_again) == (202, 409)
    assert "idempotency_key 'taken' was used for another request (restart {})" in answer["error"]
    assert [job["action"] for job in listing["jobs"]] == ["restart"]
    assert listing["actions"]["sleep"]["params"]["level"] == {
        "type": "int", "help": "1: offload weights; 2: discard them",
        "minimum": 1, "maximum": 2, "default": 1,
    }  # fmt: skip


async def _refuses_malformed_requests(http: aiohttp.ClientSession) -> None:
    bodies = [
        (b"not json", "the body is not JSON"),
        (b'{"action": "restart", "params": {}}', "idempotency_key must be a string of 1 to 200"),
        (b'{"action": "restart", "idempotency_key": "k", "when": 1}',
         "unknown request field 'when'"),
        (b'{"action": "restart", "idempotency_key": "k", "params": [1]}',
         "params must be a JSON object"),
    ]  # fmt: skip
    for body, message in bodies:
        async with http.post("/v1/actions", data=body) as resp:
            assert resp.status == 400 and message in (await resp.json())["error"], body


async def test_it_needs_the_token_for_actions() -> None:
    async with served_agent(start=False) as s:
        port = s.http._base_url.port  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/v1/actions"
        body = {"action": "restart", "params": {}, "idempotency_key": "k"}
        async with aiohttp.ClientSession() as anonymous:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with anonymous.post(url, json=body, headers=headers) as resp:
                    assert resp.status == 401
                async with anonymous.get(url + "/anything", headers=headers) as resp:
                    assert resp.status == 401
        async with s.http.get("/v1/actions/no-such-job") as resp:
            assert resp.status == 404
        assert s.agent.actions.recent() == []


async def test_it_frees_gpu_memory_without_touching_the_served_tree_or_the_agent() -> None:
    gpu = idle_gpu()
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    unlisted = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    nvml = SimulatedNvml([gpu])
    try:
        async with served_agent(nvml=nvml, signaller=OsSignaller()) as s:
            child = s.agent.vllm.pid
            assert child is not None
            gpu.processes = [
                GpuProcessUse(child, 60 * GIB, "vllm"),
                GpuProcessUse(foreign.pid, 9 * GIB, "python3"),
                GpuProcessUse(os.getpid(), 1 * GIB, "python3"),
            ]
            planned = await s.run("free_gpu_memory", dry_run=True)
            freed = await s.run("free_gpu_memory", term_timeout_s=5)
            assert psutil.Process(child).is_running() and s.agent.vllm.pid == child
    finally:
        for proc in (foreign, unlisted):
            proc.kill()
            proc.wait()

    assert planned["status"] == "succeeded" and foreign.returncode == -signal.SIGTERM
    assert [t["pid"] for t in planned["result"]["targets"]] == [foreign.pid]
    assert [(p["pid"], p["why"]) for p in planned["result"]["spared"]] == [
        (child, "the served vLLM process tree"),
        (os.getpid(), "the agent itself"),
    ]
    assert freed["status"] == "succeeded", freed
    assert freed["result"]["terminated"] == [foreign.pid] and freed["result"]["killed"] == []
    assert unlisted.returncode == -signal.SIGKILL  # ours, in finally: never signalled before


async def test_it_uses_the_development_endpoints_when_vllm_offers_them() -> None:
    env = sim_env(VLLM_SERVER_DEV_MODE="1")
    async with served_agent("--enable-sleep-mode", env=env) as s:
        await s.serving()
        reset = await s.run("reset_prefix_cache")
        asleep = await s.run("sleep", level=1)
        awake = await s.run("wake_up", tags=["weights", "kv_cache"])
        drained = await s.run("drain", timeout_s=1)
        resumed = await s.run("resume")
    assert reset["status"] == "succeeded", reset
    assert (asleep["status"], awake["status"]) == ("succeeded", "succeeded"), (asleep, awake)
    assert drained["status"] == "succeeded" and drained["result"]["method"] == "pause"
    assert resumed["status"] == "succeeded", resumed


async def test_it_says_when_the_development_endpoints_are_off_and_drains_by_sigterm() -> None:
    async with served_agent("--shutdown-timeout", "1") as s:
        await s.serving()
        reset = await s.run("reset_prefix_cache", reset_running_requests=True)
        drained = await s.run("drain", timeout_s=5)
        assert s.agent.vllm.pid is None
    assert reset["status"] == "failed"
    assert reset["error"] == (
        "vLLM does not serve /reset_prefix_cache: its development endpoints are off "
        "(start vLLM with VLLM_SERVER_DEV_MODE=1)"
    )
    assert drained["status"] == "succeeded", drained
    assert drained["result"]["method"] == "sigterm" and drained["result"]["drained"] is True


async def test_it_runs_the_validator_and_serves_its_report_as_an_event() -> None:
    async with served_agent(start=False) as s:
        job = await s.run("run_validator")
        async with s.http.get("/v1/checkpoint?events_since=0") as resp:
            everything = decode(await resp.read())
        async with s.http.get(f"/v1/checkpoint?events_since={everything.event_seq}") as resp:
            nothing_new = decode(await resp.read())
        async with s.http.get("/v1/checkpoint?events_since=-1") as resp:
            bad = resp.status
    assert job["status"] == "succeeded", job
    assert [v.trigger for v in everything.validations] == ["on_demand"]
    assert everything.validations[0].id == job["result"]["report"]["id"]
    assert everything.event_seq >= everything.validations[0].id  # transitions are events too
    assert nothing_new.validations == [] and nothing_new.event_seq == everything.event_seq
    assert bad == 400
