"""`sentinel-agent`: run the agent beside one vLLM server and serve its checkpoints.

    sentinel-agent run [options] -- vllm serve MODEL [ARGS]   supervise: vLLM is the agent's
                                                              child, restartable with changes
    sentinel-agent [attach] [options]                         attach: watch a vLLM started
                                                              elsewhere (--log-file or
                                                              --journal-unit, --restart-command)

Options may also come from a TOML file (`--config agent.toml`) holding AgentConfig's field
names, with argv lists as lists (`restart_command = ["systemctl", "restart", "vllm"]`); flags
win over the file. The bearer token comes from `--token-file` or the SENTINEL_AGENT_TOKEN
environment variable; the agent refuses to start without one, never logs it, and never hands
it to vLLM or to a restart command.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import socket
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from agent import AGENT_VERSION
from agent.agent import Agent
from agent.config import GPU_BACKENDS, AgentConfig
from agent.control import ControlError
from agent.server import start_server
from agent.vllm_args import parse

TOKEN_ENV = "SENTINEL_AGENT_TOKEN"
SUBCOMMANDS = ("run", "attach")
# Flags given as one string and split into an argv list (shlex splits; nothing runs a shell).
ARGV_FLAGS = ("restart_command", "restart_template", "vllm_cmdline")
FILE_KEYS = frozenset(f.name for f in fields(AgentConfig)) - {"token", "vllm_command"}

log = logging.getLogger("agent")


class StartupError(Exception):
    """A configuration problem the operator must fix; the message says which."""


def main(argv: list[str] | None = None) -> int:
    try:
        options, command = _split_argv(sys.argv[1:] if argv is None else argv)
    except StartupError as exc:
        print(f"sentinel-agent: {exc}", file=sys.stderr)
        return 2
    args = _parser().parse_args(options)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = _config(args, command)
        nvml = _nvml(config.gpu_backend)
        asyncio.run(_serve(config, nvml))
    except StartupError as exc:
        print(f"sentinel-agent: {exc}", file=sys.stderr)
        return 2
    return 0


def _split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Return the agent's options and the vLLM command after `--` (checked by subcommand)."""
    subcommand = argv[0] if argv and argv[0] in SUBCOMMANDS else "attach"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    options, command = (
        (rest[: rest.index("--")], rest[rest.index("--") + 1 :]) if "--" in rest else (rest, [])
    )
    if subcommand == "run" and not command:
        raise StartupError("run needs the vLLM command after --: run [options] -- vllm serve MODEL")
    if subcommand == "attach" and command:
        raise StartupError(
            "a vLLM command after -- needs `run`: sentinel-agent run [options] -- ..."
        )
    return options, command


def _parser() -> argparse.ArgumentParser:
    # SUPPRESS: only the flags given appear, so they can win over the config file's values.
    p = argparse.ArgumentParser(
        prog="sentinel-agent",
        description=__doc__.splitlines()[0],
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", type=Path, help="TOML file of settings (flags win over it)")
    p.add_argument("--host-name", help="this host's name (default: the machine's)")
    p.add_argument("--token-file", type=Path, help=f"file holding the token (else ${TOKEN_ENV})")
    p.add_argument("--vllm-url", help="default http://127.0.0.1:8000, or the supervised --port")
    p.add_argument("--listen-host")
    p.add_argument("--listen-port", type=int)
    p.add_argument("--gpu-backend", choices=GPU_BACKENDS)
    p.add_argument("--scrape-timeout-s", type=float)
    p.add_argument("--stall-after-s", type=float)
    p.add_argument(
        "--disk",
        dest="disk_paths",
        action="append",
        metavar="PATH",
        help="watch the filesystem holding PATH (repeat; default: /, /dev/shm, the HF and vLLM "
        "caches, /tmp)",
    )
    supervise = p.add_argument_group("supervise mode (run)")
    supervise.add_argument(
        "--restart-on-failure", action="store_true", help="restart vLLM after an unexpected exit"
    )
    supervise.add_argument("--restart-delay-s", type=float)
    supervise.add_argument("--stop-timeout-s", type=float, help="SIGTERM, then SIGKILL after this")
    supervise.add_argument(
        "--no-validate-on-start",
        dest="validate_on_start",
        action="store_false",
        help="skip the pre-startup validator before starting vLLM",
    )
    supervise.add_argument(
        "--block-on-failed-check",
        action="store_true",
        help="do not start vLLM when a pre-startup check fails",
    )
    p.add_argument(
        "--stats-port",
        type=int,
        help="UDP port for the optional vLLM stat-logger plugin (SENTINEL_AGENT_STATS_PORT)",
    )
    attach = p.add_argument_group("attach mode")
    attach.add_argument("--vllm-pid", type=int, help="else the process listening on the vLLM port")
    attach.add_argument("--log-file", help="vLLM's log file, followed like tail -F")
    attach.add_argument("--journal-unit", help="the systemd unit whose journal holds vLLM's output")
    attach.add_argument(
        "--vllm-cmdline", help="how vLLM was started, e.g. 'vllm serve M --port 8000'"
    )
    attach.add_argument("--restart-command", help="e.g. 'systemctl restart vllm' (no shell)")
    attach.add_argument("--restart-template", help="argv with {vllm_argv} and/or {env}")
    attach.add_argument("--command-timeout-s", type=float)
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.add_argument("--version", action="version", version=AGENT_VERSION)
    return p


def _config(args: argparse.Namespace, command: list[str]) -> AgentConfig:
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "token_file", "log_level")}
    for name in ARGV_FLAGS:
        if name in flags:
            flags[name] = shlex.split(flags[name])
    settings = {**_file_settings(getattr(args, "config", None)), **flags}
    settings.setdefault("host_name", socket.gethostname())
    if command:
        settings["vllm_command"] = command
        settings.setdefault("vllm_url", _supervised_url(command))
    try:
        return AgentConfig(token=_token(getattr(args, "token_file", None)), **settings)
    except (TypeError, ValueError) as exc:
        raise StartupError(str(exc)) from None


def _file_settings(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StartupError(f"cannot read --config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"--config {path}: {exc}") from None
    unknown = sorted(set(settings) - FILE_KEYS)
    if unknown:
        raise StartupError(f"--config {path}: unknown settings {', '.join(unknown)}")
    return settings


def _supervised_url(command: list[str]) -> str:
    """Return the URL a supervised vLLM will serve on, from its --host and --port."""
    try:
        parsed = parse(command)
    except ValueError:
        return "http://127.0.0.1:8000"  # AgentConfig names the command's problem
    host = str(parsed.get("host", "127.0.0.1"))
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{parsed.get('port', 8000)}"


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
    try:
        runner, port = await start_server(agent, config.listen_host, config.listen_port)
    except OSError as exc:
        await agent.close()
        raise StartupError(
            f"cannot listen on {config.listen_host}:{config.listen_port}: {exc}"
        ) from None
    try:
        await agent.start()
    except ControlError as exc:
        await runner.cleanup()
        await agent.close()
        raise StartupError(str(exc)) from None
    log.info(
        "agent %s for %s (%s mode) serving on %s:%d",
        AGENT_VERSION,
        config.host_name,
        config.mode,
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


if __name__ == "__main__":
    sys.exit(main())
