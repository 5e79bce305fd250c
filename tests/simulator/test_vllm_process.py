"""`python -m simulator.vllm_process`: one simulated vLLM as a real process, and the fleet's use
of it (`--processes`) and of the in-process supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from agent.checkpoint import decode
from simulator.engine import Phase
from simulator.fleet import FleetConfig, run_fleet
from tests.simulator.support import EPOCH

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SERVING = "Application startup complete."


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _spawn(port: int, *args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator.vllm_process", "serve", MODEL,
        "--host", "127.0.0.1", "--port", str(port), *args,
        env={**os.environ, "SENTINEL_SIM_SPEED": "20", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _read_until(proc: asyncio.subprocess.Process, fragment: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    while line := (await asyncio.wait_for(proc.stdout.readline(), 15)).decode():
        lines.append(line.rstrip("\n"))
        if fragment in line:
            return lines
    raise AssertionError(f"the process ended before {fragment!r}:\n" + "\n".join(lines))


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def test_it_serves_and_logs_like_vllm_until_sigterm() -> None:
    port = _port()
    proc = await _spawn(port, "--max-num-seqs", "48", "--kv-cache-dtype", "fp8")
    try:
        startup = await _read_until(proc, SERVING)
        health, _ = await _get(f"http://127.0.0.1:{port}/health")
        _, metrics = await _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await proc.communicate()
    assert health == 200 and 'cache_dtype="fp8"' in metrics
    assert "'max_num_seqs': 48" in next(line for line in startup if "non-default args" in line)
    assert startup[0].startswith("(APIServer pid=") and " INFO " in startup[0]
    rest = out.decode().splitlines()
    triggered = rest.index(next(ln for ln in rest if "shutdown triggered" in ln))
    assert proc.returncode == 0
    assert "stopping engine client mode=abort timeout=0s" in rest[triggered + 1]
    assert "INFO:     Finished server process [" in rest[-1]


async def test_it_exits_after_its_engine_dies(tmp_path: Path) -> None:
    scenario = tmp_path / "dies.toml"
    scenario.write_text(
        '[host]\nstartup_scale = 0.1\n\n[[effects]]\nkind = "engine_death"\nat_s = 1\n'
        "\n[lifecycle]\nrestart_after_death_s = 1\n"
    )
    proc = await _spawn(_port(), SENTINEL_SIM_SCENARIO=str(scenario))
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    assert proc.returncode == 1  # once dead, it stays down: the supervisor decides
    assert text.index("EngineDeadError") < text.index("terminating server process")


async def test_it_drains_running_requests_on_sigterm_with_a_shutdown_timeout() -> None:
    proc = await _spawn(_port(), "--shutdown-timeout", "2")
    try:
        await _read_until(proc, SERVING)
        await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert "stopping engine client mode=drain timeout=2s" in out.decode()


async def test_it_refuses_a_bad_command_line() -> None:
    for args in (["--kv-cache-dtype", "int3"], ["--max-num-seqs", "many"]):
        proc = await _spawn(_port(), *args)
        _, err = await proc.communicate()
        assert proc.returncode == 2 and err.decode().startswith("vllm serve: error: "), args


async def test_it_runs_a_fleet_of_real_vllm_processes_under_supervising_agents(
    tmp_path: Path,
) -> None:
    config = FleetConfig(hosts=1, seed=2, speed=20, processes=True, log_dir=tmp_path)
    async with run_fleet(config) as fleet, aiohttp.ClientSession() as session:
        (entry,) = fleet.manifest["hosts"]
        (host,) = fleet.process_hosts
        headers = {"Authorization": f"Bearer {entry['token']}"}
        async with session.get(entry["agent_url"] + "/v1/checkpoint", headers=headers) as resp:
            cp = decode(await resp.read())
        for _ in range(200):
            if SERVING in (tmp_path / "gpu-01.log").read_text():
                break
            await asyncio.sleep(0.025)
        child = host.supervisor.pid
    assert entry["mode"] == "supervise" and entry["vllm_url"].endswith(str(host.vllm_port))
    assert cp.mode == "supervise" and cp.process is not None and cp.process.pid == child
    assert cp.engine_args["port"] == host.vllm_port
    assert SERVING in (tmp_path / "gpu-01.log").read_text()
    assert host.supervisor.pid is None  # closing the fleet stopped it


async def test_it_reports_engine_deaths_and_restarts_of_in_process_hosts() -> None:
    config = FleetConfig(hosts=1, seed=4, scenarios=["memory_leak_oom"], speed=0, epoch=EPOCH)
    async with run_fleet(config) as fleet:
        (host,) = fleet.hosts
        lines: list[str] = []
        host.supervisor.logs.subscribe(lambda line: lines.append(line.text))
        first = host.sim.run.proc.pid
        while host.sim.phase is not Phase.DEAD:
            await fleet.advance(5)
        await fleet.advance(40)  # exit 5 s after the death, restart 20 s later
        second = host.sim.run.proc.pid
    assert fleet.manifest["hosts"][0]["mode"] == "supervise"
    oom = next(i for i, line in enumerate(lines) if "torch.OutOfMemoryError" in line)
    exited = lines.index(f"sentinel-agent: vLLM process {first} exited with code 1")
    started = next(i for i, line in enumerate(lines) if f"process {second} started" in line)
    assert oom < exited < started < len(lines) - 1  # the new process's own lines follow
