"""`sentinel-agent`: run the agent beside one vLLM server and serve its checkpoints.

The bearer token comes from `--token-file` or the SENTINEL_AGENT_TOKEN environment variable;
the agent refuses to start without one, and never logs it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from agent import AGENT_VERSION
from agent.agent import Agent
from agent.config import GPU_BACKENDS, AgentConfig
from agent.server import start_server

TOKEN_ENV = "SENTINEL_AGENT_TOKEN"

log = logging.getLogger("agent")


class StartupError(Exception):
    """A configuration problem the operator must fix; the message says which."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = _config(args)
        nvml = _nvml(config.gpu_backend)
    except StartupError as exc:
        print(f"sentinel-agent: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(config, nvml))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentinel-agent", description=__doc__.splitlines()[0])
    p.add_argument("--host-name", default=socket.gethostname(), help="this host's name")
    p.add_argument("--token-file", type=Path, help=f"file holding the token (else ${TOKEN_ENV})")
    p.add_argument("--vllm-url", default="http://127.0.0.1:8000")
    p.add_argument("--listen-host", default="127.0.0.1")
    p.add_argument("--listen-port", type=int, default=9300)
    p.add_argument("--gpu-backend", choices=GPU_BACKENDS, default="nvml")
    p.add_argument("--vllm-pid", type=int, help="else the process listening on the vLLM port")
    p.add_argument("--scrape-timeout-s", type=float, default=2.0)
    p.add_argument("--stall-after-s", type=float, default=15.0)
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.add_argument("--version", action="version", version=AGENT_VERSION)
    return p


def _config(args: argparse.Namespace) -> AgentConfig:
    try:
        return AgentConfig(
            host_name=args.host_name,
            token=_token(args.token_file),
            vllm_url=args.vllm_url,
            listen_host=args.listen_host,
            listen_port=args.listen_port,
            gpu_backend=args.gpu_backend,
            vllm_pid=args.vllm_pid,
            scrape_timeout_s=args.scrape_timeout_s,
            stall_after_s=args.stall_after_s,
        )
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def _token(path: Path | None) -> str:
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise StartupError(f"cannot read --token-file {path}: {exc.strerror}") from None
        if not token:
            raise StartupError(f"--token-file {path} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise StartupError(f"no token: pass --token-file or set {TOKEN_ENV}")
    return token


def _nvml(backend: str) -> Any | None:
    """Return the NVML object for `backend`; None lets the agent use pynvml (or no GPUs)."""
    if backend != "simulated":
        return None
    try:
        from simulator.nvml import SimulatedNvml
    except ImportError as exc:
        raise StartupError(f"--gpu-backend simulated needs the simulator package: {exc}") from None
    return SimulatedNvml()


async def _serve(config: AgentConfig, nvml: Any | None) -> None:
    agent = Agent(config, nvml=nvml)
    runner, port = await start_server(agent, config.listen_host, config.listen_port)
    log.info(
        "agent %s for %s serving on %s:%d",
        AGENT_VERSION,
        config.host_name,
        config.listen_host,
        port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await runner.cleanup()
        await agent.close()
