"""One simulated GPU host: a vLLM server (model + HTTP) with the real Sentinel agent beside it.

The agent is the production code from `agent/`, given the host's simulated NVML and a
handle on the simulated vLLM process instead of pynvml and psutil; it scrapes the
simulated server over loopback HTTP exactly as it would scrape vLLM.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.agent import Agent
from agent.config import AgentConfig
from agent.server import start_server
from simulator.engine import SimulatedVllm
from simulator.logs import VllmLog
from simulator.process import CurrentProcess
from simulator.scenario import Scenario
from simulator.server import VllmHttpServer


def host_token(seed: int, name: str) -> str:
    """Return the host's bearer token: derived from the seed, so a fleet's manifest is stable.

    Simulated hosts only: the manifest carries the tokens anyway.
    """
    return "sim_" + hashlib.sha256(f"{seed}:{name}:token".encode()).hexdigest()[:32]


class SimulatedHost:
    def __init__(
        self,
        name: str,
        scenario: Scenario,
        seed: int,
        epoch: float,
        *,
        bind: str = "127.0.0.1",
        vllm_port: int = 0,
        agent_port: int = 0,
        log_dir: Path | None = None,
        advertise_host: str | None = None,
    ) -> None:
        self.name = name
        self.token = host_token(seed, name)
        self.log_path = log_dir / f"{name}.log" if log_dir else None
        self.sim = SimulatedVllm(name, scenario, seed, epoch, VllmLog(self.log_path))
        self.http = VllmHttpServer(self.sim, bind, vllm_port)
        self.process = CurrentProcess(self._current_process)
        self.bind = bind
        self.agent_port = agent_port
        self.advertise_host = advertise_host or ("127.0.0.1" if bind == "0.0.0.0" else bind)
        self.agent: Agent | None = None
        self._agent_runner: web.AppRunner | None = None

    async def start(self, with_agent: bool = True) -> None:
        """Start the agent (it runs through vLLM restarts) and open the vLLM port if ready."""
        if with_agent:
            await self._start_agent()
        await self.http.sync()

    async def sync(self) -> None:
        await self.http.sync()

    async def close(self) -> None:
        if self.agent is not None:
            await self.agent.close()
        if self._agent_runner is not None:
            await self._agent_runner.cleanup()
        await self.http.close()
        self.sim.log.close()

    def manifest_entry(self) -> dict[str, Any]:
        host = self.sim.scenario.host
        return {
            "name": self.name,
            "model": self.sim.given.model_name,
            "vllm_url": f"http://{self.advertise_host}:{self.http.port}",
            "agent_url": f"http://{self.advertise_host}:{self.agent_port}" if self.agent else None,
            "token": self.token,
            "scenario": self.sim.scenario.name,
            "gpu_count": host.gpu_count,
            "gpu_name": host.gpu_name,
            "dev_mode": self.sim.dev_mode,
            "log_path": str(self.log_path) if self.log_path else None,
        }

    async def _start_agent(self) -> None:
        # The agent sits beside vLLM: it reaches it over loopback whatever the bind address.
        local = "127.0.0.1" if self.bind == "0.0.0.0" else self.bind
        config = AgentConfig(
            host_name=self.name,
            token=self.token,
            vllm_url=f"http://{local}:{self.http.port}",
            listen_host=self.bind,
            listen_port=self.agent_port,
            gpu_backend="simulated",
        )
        self.agent = Agent(config, nvml=self.sim.nvml, process_source=self.process)
        runner, self.agent_port = await start_server(self.agent, self.bind, self.agent_port)
        self._agent_runner = runner

    def _current_process(self) -> Any:
        run = self.sim.run
        return run.proc if run is not None else None
