"""Measure what the agent costs its host: CPU per checkpoint and resident memory.

1. Start a stand-in vLLM in a child process. It serves the recorded /metrics sample with
   every counter and histogram advanced on each scrape, so the agent does the full work of
   rates and percentiles.
2. Start the real `sentinel-agent` in another child process, watching that stand-in (and its
   process), with GPU collection off by default (`--gpu-backend nvml` on a GPU host).
3. Poll the agent's /v1/checkpoint N times and read the agent's CPU time and RSS from /proc.

The budget is < 1 % of one core at one checkpoint per second (10 ms of CPU per checkpoint)
and < 60 MB resident.

    .venv/bin/python bench/agent_cost.py [--checkpoints 200] [--interval-s 0.1] [--gpu-backend nvml]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "vllm-metrics-sample.prom"
TOKEN = "bench-token-0123456789abcdef"

STAND_IN = r"""
import re, sys
from aiohttp import web

lines = open(sys.argv[1]).read().splitlines()
advancing = re.compile(r"^vllm:\S*(_total|_bucket|_count|_sum)[{ ]")
scrapes = 0

def body():
    out = []
    for line in lines:
        if line and line[0] != "#" and advancing.match(line):
            series, value = line.rsplit(" ", 1)
            line = f"{series} {float(value) + 7.0 * scrapes!r}"
        out.append(line)
    return "\n".join(out) + "\n"

async def metrics(request):
    global scrapes
    scrapes += 1
    return web.Response(text=body(), content_type="text/plain")

async def health(request):
    return web.Response()

app = web.Application()
app.router.add_get("/metrics", metrics)
app.router.add_get("/health", health)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


async def poll(port: int, count: int, interval_s: float) -> float:
    """Poll `count` checkpoints; return the agent's mean collect_duration_s."""
    url = f"http://127.0.0.1:{port}/v1/checkpoint"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    durations: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(url, headers=headers) as resp:
                resp.raise_for_status()
                durations.append((await resp.json())["collect_duration_s"])
            await asyncio.sleep(interval_s)
    return float(sum(durations) / len(durations))


async def run(count: int, interval_s: float, gpu_backend: str, breakdown: bool) -> None:
    vllm_port, agent_port = free_port(), free_port()
    stand_in = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STAND_IN, str(SAMPLE), str(vllm_port)
    )
    env = {**os.environ, "SENTINEL_AGENT_TOKEN": TOKEN}
    args = ["--vllm-url", f"http://127.0.0.1:{vllm_port}", "--vllm-pid", str(stand_in.pid)]
    args += ["--listen-port", str(agent_port), "--gpu-backend", gpu_backend, "--host-name", "bench"]
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from agent.main import main; sys.exit(main())",
        *args,
        env=env,
    )
    try:
        await wait_for_port(vllm_port)
        await wait_for_port(agent_port)
        await poll(agent_port, 5, 0.0)  # warm up: imports, first connections, series cache
        proc = psutil.Process(agent.pid)
        before = proc.cpu_times()
        mean_collect_s = await poll(agent_port, count, interval_s)
        after = proc.cpu_times()
        report(count, before, after, proc.memory_full_info(), mean_collect_s)
        if breakdown:
            print_breakdown(proc)
    finally:
        for child in (agent, stand_in):
            child.terminate()
            await child.wait()


def report(count: int, before: Any, after: Any, memory: Any, mean_collect_s: float) -> None:
    cpu_s = (after.user + after.system) - (before.user + before.system)
    per_checkpoint_ms = 1000 * cpu_s / count
    print(f"checkpoints:               {count}")
    print(
        f"agent CPU per checkpoint:  {per_checkpoint_ms:.2f} ms "
        f"({per_checkpoint_ms / 10:.2f} % of one core at 1 checkpoint/s; budget 1 %)"
    )
    print(f"agent resident memory:     {memory.rss / 2**20:.1f} MiB (budget 60 MB)")
    # Shared libraries' pages count in RSS once per process that maps them; USS is what
    # ending the agent would free, PSS its fair share of what it shares.
    own, share = memory.uss / 2**20, memory.pss / 2**20
    print(f"  of which its own (USS):  {own:.1f} MiB; PSS {share:.1f} MiB")
    print(f"mean collect_duration_s:   {1000 * mean_collect_s:.2f} ms (wall, incl. HTTP to vLLM)")
    sample_lines = sum(1 for line in SAMPLE.read_text().splitlines() if line)
    print(f"/metrics body:             {sample_lines} lines ({SAMPLE.name}, counters advancing)")


def print_breakdown(proc: psutil.Process) -> None:
    """Print where the agent's resident memory is: its threads and its largest mappings."""
    print(f"agent threads:             {proc.num_threads()}")
    maps = sorted(proc.memory_maps(grouped=True), key=lambda m: m.rss, reverse=True)
    for m in maps[:8]:
        print(f"  {m.rss / 2**20:6.1f} MiB  {m.path or '[anon]'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=200)
    parser.add_argument("--interval-s", type=float, default=0.1)
    parser.add_argument(
        "--gpu-backend", default="none", help="nvml on a GPU host: the agent reads the GPUs too"
    )
    parser.add_argument("--breakdown", action="store_true", help="threads and largest mappings")
    args = parser.parse_args()
    print(f"GPU backend:               {args.gpu_backend}")
    asyncio.run(run(args.checkpoints, args.interval_s, args.gpu_backend, args.breakdown))


if __name__ == "__main__":
    main()
