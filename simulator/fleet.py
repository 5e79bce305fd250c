"""A fleet of simulated hosts in one event loop, its clock, and its manifest.

The clock is simulated: every host steps in fixed ticks, and a background task catches
the simulated time up with wall time x speed. Asyncio's timing jitter changes when a tick
runs, never what it computes, so a seed gives the same fleet history at any speed.
With `speed=0` nothing moves on its own; tests call `advance()`. The in-process hosts'
agents read the same clock (`fleet.clock`: epoch + simulated seconds), so their
checkpoints carry simulated times and per-simulated-second rates.

    async with run_fleet(FleetConfig(hosts=3, seed=7, speed=0)) as fleet:
        await fleet.advance(30)               # 30 simulated seconds, servers now serving
        url = fleet.manifest["hosts"][0]["vllm_url"]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.host import ProcessHost, SimulatedHost
from simulator.scenario import load_scenario

TICK_S = 0.25
MAX_TICKS_PER_WAKE = 40  # when the CPU falls behind, serve HTTP between catch-up batches
MANIFEST_VERSION = 1


@dataclass(slots=True)
class FleetConfig:
    hosts: int = 1
    seed: int = 0
    scenarios: list[str] = field(default_factory=lambda: ["healthy"])
    speed: float = 1.0  # 0: the clock moves only in advance()
    bind: str = "127.0.0.1"
    advertise_host: str | None = None  # the host name the manifest's URLs use
    base_port: int = 0  # 0: the OS picks; else host i gets base+2i (vLLM) and base+2i+1 (agent)
    log_dir: Path | None = None
    with_agents: bool = True
    epoch: float | None = None  # the simulated clock's start (epoch s); None: now
    tick_s: float = TICK_S
    processes: bool = False  # each vLLM a real child process on its own clock (at `speed`)


@dataclass(slots=True)
class SimulatedClock:
    """The fleet's clock as its agents read it (agent.clock.Clock): epoch + simulated s."""

    epoch: float
    t: float = 0.0  # simulated seconds since the fleet started

    def time(self) -> float:
        return self.epoch + self.t

    def monotonic(self) -> float:
        return self.t


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.epoch = config.epoch if config.epoch is not None else round(time.time(), 3)
        self.clock = SimulatedClock(self.epoch)
        names = config.scenarios
        self._scenarios = {name: load_scenario(name) for name in names}
        # `hosts` are simulated in this process; with `processes`, `process_hosts` instead.
        self.hosts: list[SimulatedHost] = []
        self.process_hosts: list[ProcessHost] = []
        for i in range(config.hosts):
            self._add_host(i, names[i % len(names)])
        self._clock: asyncio.Task[None] | None = None

    def _add_host(self, i: int, scenario: str) -> None:
        c = self.config
        vllm_port, agent_port = (
            (c.base_port + 2 * i, c.base_port + 2 * i + 1) if c.base_port else (0, 0)
        )
        name = f"gpu-{i + 1:02d}"
        if c.processes:
            host = ProcessHost(
                name,
                scenario,
                c.seed,
                c.speed,
                bind=c.bind,
                vllm_port=vllm_port,
                agent_port=agent_port,
                log_dir=c.log_dir,
                advertise_host=c.advertise_host,
            )
            self.process_hosts.append(host)
            return
        self.hosts.append(
            SimulatedHost(
                name,
                self._scenarios[scenario],
                c.seed,
                self.epoch,
                bind=c.bind,
                vllm_port=vllm_port,
                agent_port=agent_port,
                log_dir=c.log_dir,
                advertise_host=c.advertise_host,
                clock=self.clock,
            )
        )

    @property
    def t(self) -> float:
        """Return the simulated seconds since the fleet started."""
        return self.clock.t

    @property
    def all_hosts(self) -> list[SimulatedHost | ProcessHost]:
        return [*self.hosts, *self.process_hosts]

    @property
    def manifest(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "seed": self.config.seed,
            "speed": self.config.speed,
            "epoch": self.epoch,
            "hosts": [h.manifest_entry() for h in self.all_hosts],
        }

    def host(self, name: str) -> SimulatedHost | ProcessHost:
        return next(h for h in self.all_hosts if h.name == name)

    async def start(self) -> None:
        for h in self.all_hosts:
            await h.start(with_agent=self.config.with_agents)
        if self.config.speed > 0 and not self.config.processes:
            self._clock = asyncio.create_task(self._run_clock(), name="simulator-clock")

    async def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        for h in self.all_hosts:
            await h.close()

    async def advance(self, seconds: float) -> None:
        """Step every host through `seconds` of simulated time, then update their ports."""
        ticks = round(seconds / self.config.tick_s)
        for _ in range(ticks):
            self.tick()
        await self.sync()

    def tick(self) -> None:
        """Step every host through one tick; the ports follow at the next `sync()`."""
        for h in self.hosts:
            h.step(self.config.tick_s)
        self.clock.t += self.config.tick_s

    async def sync(self) -> None:
        for h in self.hosts:
            await h.sync()

    async def _run_clock(self) -> None:
        tick, speed = self.config.tick_s, self.config.speed
        started = time.monotonic()
        while True:
            target = (time.monotonic() - started) * speed
            done = 0
            while self.t + tick <= target and done < MAX_TICKS_PER_WAKE:
                self.tick()
                done += 1
            await self.sync()
            await asyncio.sleep(tick / speed / 2 if done < MAX_TICKS_PER_WAKE else 0)


@contextlib.asynccontextmanager
async def run_fleet(config: FleetConfig) -> AsyncIterator[Fleet]:
    """Start a fleet, yield it (its `manifest` lists every host), and stop it on exit."""
    fleet = Fleet(config)
    try:
        await fleet.start()
        yield fleet
    finally:
        await fleet.close()


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Write the manifest atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
