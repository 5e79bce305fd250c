"""One simulated GPU host: a vLLM server (model + HTTP) with the real Sentinel agent beside it.

The agent is the production code from `agent/`, in supervise mode. `SimulatedHost` runs the
server in this process (cheap: a fleet of hundreds fits in one event loop): the agent gets
the host's simulated NVML, its simulated machine (simulator/system.py: RAM and disks) and
a SimulatedSupervisor (simulator/supervised.py) instead of pynvml, psutil and a child
process. `ProcessHost` runs it as a real child process
(`python -m simulator.vllm_process`) under the agent's own ProcessSupervisor; its GPUs are
not shown (the simulated GPUs live in the child). Either way the agent scrapes the server
over loopback HTTP exactly as it would scrape vLLM, and actions restart it for real.
"""

from __future__ import annotations

import hashlib
import socket
import sys
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from agent.agent import Agent
from agent.clock import Clock
from agent.config import AgentConfig
from agent.loglines import LogLine
from agent.logsources import LogFanout
from agent.server import start_server
from agent.supervisor import ProcessSupervisor
from agent.vllm_args import VllmCommand
from simulator.engine import SimulatedVllm
from simulator.scenario import Scenario, load_scenario
from simulator.server import VllmHttpServer
from simulator.supervised import FanoutLog, SimulatedSignaller, SimulatedSupervisor
from simulator.system import DISK_PATHS, SimulatedSystem
from simulator.vllm_process import HOST_ENV, SCENARIO_ENV, SEED_ENV, SPEED_ENV


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
        clock: Clock,
    ) -> None:
        self.name = name
        self.token = host_token(seed, name)
        self.clock = clock  # the fleet's simulated clock: the agent and the log lines read it
        self.log_path = log_dir / f"{name}.log" if log_dir else None
        log = FanoutLog(self.log_path)
        self.sim = SimulatedVllm(name, scenario, seed, epoch, log)
        self.http = VllmHttpServer(self.sim, bind, vllm_port)
        self.supervisor = SimulatedSupervisor(self.sim, log, LogFanout(clock), self.http.sync)
        self.bind = bind
        self.agent_port = agent_port
        self.advertise_host = advertise_host or ("127.0.0.1" if bind == "0.0.0.0" else bind)
        self.agent: Agent | None = None
        self._agent_runner: web.AppRunner | None = None

    async def start(self, with_agent: bool = True) -> None:
        """Start the agent (it runs through vLLM restarts) and open the vLLM port if ready."""
        if with_agent:
            await self._start_agent()
            assert self.agent is not None
            await self.agent.start()  # its XID watcher and pre-startup validation too
        await self.http.sync()

    def step(self, dt: float) -> None:
        self.sim.step(dt)
        self.supervisor.after_step()

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
            "mode": "supervise",
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
            disk_paths=list(DISK_PATHS),
        )
        self.agent = Agent(
            config,
            nvml=self.sim.nvml,
            system_source=SimulatedSystem(self.sim),
            vllm=self.supervisor,
            signaller=SimulatedSignaller(self.sim),
            clock=self.clock,
        )
        runner, self.agent_port = await start_server(self.agent, self.bind, self.agent_port)
        self._agent_runner = runner


class ProcessHost:
    """A host whose vLLM is a real child process under the real agent's ProcessSupervisor."""

    def __init__(
        self,
        name: str,
        scenario_name: str,
        seed: int,
        speed: float,
        *,
        bind: str = "127.0.0.1",
        vllm_port: int = 0,
        agent_port: int = 0,
        log_dir: Path | None = None,
        advertise_host: str | None = None,
    ) -> None:
        self.name = name
        self.token = host_token(seed, name)
        self.scenario = load_scenario(scenario_name)
        self.bind = bind
        self.local = "127.0.0.1" if bind == "0.0.0.0" else bind
        self.vllm_port = vllm_port or _free_port(self.local)
        self.agent_port = agent_port
        self.advertise_host = advertise_host or self.local
        self.log_path = log_dir / f"{name}.log" if log_dir else None
        dev_mode = "1" if self.scenario.host.dev_mode else "0"
        env = {SCENARIO_ENV: scenario_name, SEED_ENV: str(seed), SPEED_ENV: str(speed or 1.0),
               HOST_ENV: name, "VLLM_SERVER_DEV_MODE": dev_mode}  # fmt: skip
        self.supervisor = ProcessSupervisor(
            process_command(self.scenario, bind, self.vllm_port), logs=LogFanout(), env=env
        )
        self.agent: Agent | None = None
        self._agent_runner: web.AppRunner | None = None
        self._log_file: TextIO | None = None

    async def start(self, with_agent: bool = True) -> None:
        if self.log_path is not None:
            self._log_file = _open_log(self.log_path)
            self.supervisor.logs.subscribe(self._write_log)
        if with_agent:
            await self._start_agent()
            assert self.agent is not None
            await self.agent.start()  # validates, then starts the child
        else:
            await self.supervisor.start()

    def step(self, dt: float) -> None:
        """The child process keeps its own clock."""

    async def sync(self) -> None:
        """The child process opens and closes its own port."""

    async def close(self) -> None:
        if self.agent is not None:
            await self.agent.close()
        if self._agent_runner is not None:
            await self._agent_runner.cleanup()
        await self.supervisor.close()
        if self._log_file is not None:
            self._log_file.close()

    def manifest_entry(self) -> dict[str, Any]:
        host = self.scenario.host
        return {
            "name": self.name,
            "model": host.model,
            "vllm_url": f"http://{self.advertise_host}:{self.vllm_port}",
            "agent_url": f"http://{self.advertise_host}:{self.agent_port}" if self.agent else None,
            "token": self.token,
            "scenario": self.scenario.name,
            "gpu_count": host.gpu_count,
            "gpu_name": host.gpu_name,
            "dev_mode": self.supervisor.environ().get("VLLM_SERVER_DEV_MODE") == "1",
            "log_path": str(self.log_path) if self.log_path else None,
            "mode": "supervise",
        }

    async def _start_agent(self) -> None:
        config = AgentConfig(
            host_name=self.name,
            token=self.token,
            vllm_url=f"http://{self.local}:{self.vllm_port}",
            listen_host=self.bind,
            listen_port=self.agent_port,
            gpu_backend="none",
        )
        self.agent = Agent(config, vllm=self.supervisor)
        runner, self.agent_port = await start_server(self.agent, self.bind, self.agent_port)
        self._agent_runner = runner

    def _write_log(self, line: LogLine) -> None:
        if self._log_file is not None and line.stream != "agent":
            self._log_file.write(line.text + "\n")


def process_command(scenario: Scenario, bind: str, port: int) -> VllmCommand:
    """Return the command line that runs `scenario`'s server as a simulated vLLM process."""
    program = [sys.executable, "-m", "simulator.vllm_process", "serve"]
    args = {**scenario.engine_args, "host": bind, "port": port}
    return VllmCommand(program, scenario.host.model, args)


def _free_port(host: str) -> int:
    """Return a port free right now (the child binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _open_log(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8", buffering=1)
