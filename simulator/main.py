"""`sentinel-simulate`: run a fleet of simulated vLLM hosts, each with a real agent.

Every agent supervises its vLLM: actions restart it with changed arguments for real.

    sentinel-simulate --hosts 8 --seed 1 --scenario healthy,memory_leak_oom \\
        --manifest .sentinel/fleet.json --log-dir .sentinel/logs

Ctrl-C or SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from simulator.fleet import FleetConfig, run_fleet, write_manifest
from simulator.scenario import ScenarioError, available_scenarios, load_scenario


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sentinel-simulate", description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=1, help="number of simulated hosts")
    p.add_argument("--seed", type=int, default=0, help="same seed, same fleet history")
    p.add_argument(
        "--scenario",
        default="healthy",
        help=f"comma list, assigned round-robin; one of: {', '.join(available_scenarios())}",
    )
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--manifest", type=Path, help="write the fleet manifest (JSON) here")
    p.add_argument("--bind", default="127.0.0.1", help="address every server listens on")
    p.add_argument("--advertise-host", help="host name the manifest's URLs use")
    p.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="fixed ports: host i gets P+2i (vLLM) and P+2i+1 (agent); 0 lets the OS choose",
    )
    p.add_argument("--log-dir", type=Path, help="write each host's vLLM log to DIR/<host>.log")
    p.add_argument("--epoch", type=float, help="simulated start time (epoch s), default now")
    p.add_argument(
        "--processes",
        action="store_true",
        help="run each vLLM as a real child process (python -m simulator.vllm_process) "
        "under its agent's supervisor; default: in this process, cheaper",
    )
    args = p.parse_args(argv)
    if args.hosts < 1:
        p.error("--hosts must be at least 1")
    if args.speed <= 0:
        p.error("--speed must be positive")
    args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    try:
        for name in args.scenarios:
            load_scenario(name)
    except ScenarioError as exc:
        p.error(str(exc))
    return args


async def serve(args: argparse.Namespace) -> None:
    config = FleetConfig(
        hosts=args.hosts,
        seed=args.seed,
        scenarios=args.scenarios,
        speed=args.speed,
        bind=args.bind,
        advertise_host=args.advertise_host,
        base_port=args.base_port,
        log_dir=args.log_dir,
        epoch=args.epoch,
        processes=args.processes,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with run_fleet(config) as fleet:
        if args.manifest:
            write_manifest(fleet.manifest, args.manifest)
        for h in fleet.manifest["hosts"]:
            print(f"{h['name']}  {h['scenario']:<22} vllm {h['vllm_url']}  agent {h['agent_url']}")
        print(f"{len(fleet.hosts)} hosts running at speed {args.speed}; Ctrl-C stops", flush=True)
        await stop.wait()
    print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"sentinel-simulate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
