"""The agent reads time from its clock: the machine's by default, the simulator's in a fleet."""

from __future__ import annotations

import time

from agent.agent import Agent
from agent.clock import SYSTEM_CLOCK, SystemClock
from agent.config import AgentConfig
from agent.logsources import LogFanout
from simulator.engine import Phase
from simulator.fleet import FleetConfig, run_fleet
from tests.simulator.support import EPOCH


async def test_it_reads_the_machine_clocks_by_default() -> None:
    before = time.time()
    config = AgentConfig(host_name="gpu-01", token="t", vllm_url="http://127.0.0.1:9")
    agent = Agent(config, nvml=None, process_source=None)
    try:
        cp = await agent.collect()
    finally:
        await agent.close()
    assert isinstance(agent.clock, SystemClock) and agent.logs.clock is SYSTEM_CLOCK
    assert before <= agent.started_at <= cp.collected_at <= time.time()
    assert abs(SYSTEM_CLOCK.monotonic() - time.monotonic()) < 1.0


def test_it_stamps_log_lines_with_the_fanouts_clock() -> None:
    class Frozen:
        def time(self) -> float:
            return 1234.5

        def monotonic(self) -> float:
            return 7.0

    logs, seen = LogFanout(Frozen()), []
    logs.subscribe(seen.append)
    logs.say("hello")
    assert [line.at for line in seen] == [1234.5]


async def test_it_gives_checkpoints_the_simulated_time_and_rates_at_speed_zero() -> None:
    config = FleetConfig(hosts=1, seed=2, scenarios=["healthy"], speed=0, epoch=EPOCH)
    async with run_fleet(config) as fleet:
        host = fleet.hosts[0]
        assert host.agent is not None and host.agent.started_at == EPOCH
        await fleet.advance(60)
        first = await host.agent.collect()
        tokens_before = host.sim.run.stats.generation_tokens
        await fleet.advance(60)
        cp = await host.agent.collect()
        tokens_after = host.sim.run.stats.generation_tokens

    assert first.collected_at == EPOCH + 60 and cp.collected_at == EPOCH + 120
    assert cp.vllm is not None and cp.vllm.interval_s == 60.0
    simulated_rate = (tokens_after - tokens_before) / 60.0
    assert simulated_rate > 100
    assert cp.vllm.rates.generation_tokens_per_s == simulated_rate
    assert cp.process is not None and cp.process.uptime_s is not None
    assert cp.process.uptime_s <= 120.0  # the simulated process started after the fleet


async def test_it_times_errors_and_transitions_on_the_simulated_clock() -> None:
    config = FleetConfig(hosts=1, seed=4, scenarios=["memory_leak_oom"], speed=0, epoch=EPOCH)
    async with run_fleet(config) as fleet:
        host = fleet.hosts[0]
        assert host.agent is not None
        while host.sim.phase is not Phase.DEAD:
            await fleet.advance(5)
            await host.agent.collect()
        died_at = host.sim.now
        await fleet.advance(5)
        cp = await host.agent.collect()  # no wall-clock wait: 5 simulated seconds of quiet

    oom = [e for e in cp.errors if e.category == "cuda_oom"]
    assert oom and oom[0].first_seen_at is not None
    assert died_at - 5 <= oom[0].first_seen_at <= died_at
    assert cp.lifecycle_state.is_failed
    assert all(EPOCH <= t.at <= EPOCH + fleet.t for t in cp.transitions)
