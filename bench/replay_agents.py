"""Stand-in agents for the ingest benchmark's full-rate mode: N hosts on one port, cheaply.

Real agents cost their host ~3 ms of CPU per checkpoint and the simulator ~2 ms more to
render /metrics, so this 2-core machine cannot generate 1,000 real checkpoints a second and
also run the worker. This process records real checkpoints once (the simulator's hosts, read
by the real agent code), then serves them to the worker as N hosts, each answer with the
host's name, a fresh `seq` and `collected_at`, and the full metric set.

    python bench/replay_agents.py --hosts 1000 --manifest PATH

Host i is at http://127.0.0.1:PORT/h/gpu-NNNN (the worker appends /v1/checkpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import msgspec
from aiohttp import web

from agent.checkpoint import encode, replace
from simulator.fleet import FleetConfig, run_fleet

TOKEN = "replay-token-0123456789"
RECORDED_HOSTS = 8


async def record(seconds: float) -> list:  # type: ignore[type-arg]
    """Return checkpoints collected by real agents from simulated hosts after `seconds`."""
    config = FleetConfig(hosts=RECORDED_HOSTS, seed=3, speed=0)
    async with run_fleet(config) as fleet:
        await fleet.advance(seconds - 5)
        for host in fleet.hosts:
            assert host.agent is not None
            await host.agent.collect()  # the first scrape has no rates yet
        await fleet.advance(5)
        return [await host.agent.collect() for host in fleet.hosts if host.agent]


def app(recorded: list, names: list[str]) -> web.Application:  # type: ignore[type-arg]
    seq = dict.fromkeys(names, 0)
    started = time.time()

    async def checkpoint(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401)
        name = request.match_info["host"]
        seq[name] += 1
        # A real agent sends each event once (events_since); the replay sends none.
        cp = replace(
            recorded[int(name[4:]) % len(recorded)],
            host=name,
            seq=seq[name],
            agent_started_at=started,
            collected_at=time.time(),
            transitions=[],
            errors=[],
            gpu_events=[],
            validations=[],
        )
        return web.Response(body=encode(cp), content_type="application/json")

    application = web.Application()
    application.router.add_get("/h/{host}/v1/checkpoint", checkpoint)
    return application


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    recorded = await record(seconds=60)
    names = [f"gpu-{i:04d}" for i in range(1, args.hosts + 1)]
    runner = web.AppRunner(app(recorded, names), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    hosts = [
        {
            "name": n,
            "agent_url": f"http://127.0.0.1:{port}/h/{n}",
            "token": TOKEN,
            "model": recorded[0].vllm.model_name if recorded[0].vllm else "",
        }
        for n in names
    ]
    args.manifest.write_bytes(msgspec.json.encode({"hosts": hosts}))
    print(json.dumps({"port": port, "hosts": len(names)}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
