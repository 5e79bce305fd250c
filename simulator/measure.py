"""Measure what simulated hosts cost: CPU per step and per /metrics render, and a poll round.

    python -m simulator.measure --hosts 100 --seconds 120

Steps every host through `--seconds` of simulated time (round-robin over the scenarios,
as the fleet does), then renders each host's /metrics page, then polls every host's
/metrics over loopback HTTP once. Prints CPU time (process time), not wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from simulator.fleet import Fleet, FleetConfig
from simulator.scenario import available_scenarios

DEFAULT_SCENARIOS = ",".join(
    s for s in available_scenarios() if s not in ("foreign_process_oom", "api_server_leak")
)


def measure_steps(fleet: Fleet, seconds: float) -> float:
    """Return CPU seconds per host step."""
    ticks = round(seconds / fleet.config.tick_s)
    started = time.process_time()
    for _ in range(ticks):
        fleet.tick()
    return (time.process_time() - started) / (ticks * len(fleet.hosts))


def measure_renders(fleet: Fleet, rounds: int = 5) -> float:
    """Return CPU seconds per fresh render of a host's /metrics page."""
    started = time.process_time()
    for _ in range(rounds):
        for h in fleet.hosts:
            h.sim.version += 1  # as after a step: the cached page is stale
            h.http.page.body()
    return (time.process_time() - started) / (rounds * len(fleet.hosts))


async def measure_poll(fleet: Fleet) -> tuple[float, float, int]:
    """Poll every listening host's /metrics once; return CPU s, wall s and pages fetched."""
    await fleet.sync()
    urls = [h.http.url + "/metrics" for h in fleet.hosts if h.sim.listening]
    for h in fleet.hosts:
        h.sim.version += 1
    cpu, wall = time.process_time(), time.perf_counter()
    async with aiohttp.ClientSession() as session:
        bodies = await asyncio.gather(*(_fetch(session, url) for url in urls))
    assert all(bodies)
    return time.process_time() - cpu, time.perf_counter() - wall, len(urls)


async def _fetch(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        return await resp.read()


async def main_async(args: argparse.Namespace) -> None:
    config = FleetConfig(
        hosts=args.hosts, seed=1, scenarios=args.scenario.split(","), speed=0, with_agents=False
    )
    fleet = Fleet(config)
    await fleet.start()
    try:
        step_s = measure_steps(fleet, args.seconds)
        render_s = measure_renders(fleet)
        poll_cpu, poll_wall, pages = await measure_poll(fleet)
    finally:
        await fleet.close()
    real_time_share = step_s * len(fleet.hosts) / config.tick_s
    print(f"hosts: {args.hosts}, simulated {args.seconds:.0f} s in {config.tick_s} s ticks")
    print(f"step:   {step_s * 1e6:8.0f} us CPU per host per tick")
    print(f"        {100 * real_time_share:8.1f} % of one core to keep the fleet at speed 1")
    print(f"render: {render_s * 1e3:8.2f} ms CPU per fresh /metrics page (then cached)")
    print(f"poll:   {poll_cpu * 1e3:8.1f} ms CPU, {poll_wall * 1e3:.1f} ms wall, {pages} pages")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--scenario", default=DEFAULT_SCENARIOS)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
