"""Attach mode: vLLM runs elsewhere (systemd, docker, a notebook); the agent watches it.

The log comes from a file (followed like `tail -F`) or a journald unit; the pid from
`--vllm-pid` or the process listening on vLLM's port. Restarts run configured argv lists,
never through a shell:

    restart_command   ["systemctl", "restart", "vllm"]: a plain restart
    restart_template  a restart with changed arguments or environment; the token
                      "{vllm_argv}" becomes the new vLLM command line (several argv items) and
                      "{env}" becomes NAME=value items (NAME= unsets), e.g.
                      ["sudo", "/usr/local/sbin/vllm-relaunch", "{env}", "--", "{vllm_argv}"]

Engine arguments come from `vllm_cmdline` (how vLLM was started) when configured; otherwise
from vLLM's `/server_info` when its development endpoints are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp

from agent.collectors.process import find_listening_pid
from agent.collectors.vllm import VllmProbe
from agent.config import AgentConfig
from agent.control import ArgChanges, ControlError, EnvChanges, ProcessExit
from agent.logsources import CommandLines, FileTail, LogFanout, journal_argv
from agent.processes import tree_pids
from agent.vllm_args import BOOLEAN_FLAGS, FLOAT_ARGS, INT_ARGS, VllmCommand, parse

ARGV_TOKEN = "{vllm_argv}"
ENV_TOKEN = "{env}"
OUTPUT_TAIL_CHARS = 2000
PRIVATE_ENV = frozenset({"SENTINEL_AGENT_TOKEN"})


class AttachedVllm:
    mode = "attach"

    def __init__(self, config: AgentConfig, logs: LogFanout) -> None:
        self.logs = logs
        self.process: Any | None = None  # the process collector finds vLLM by pid or port
        self._config = config
        self._command = parse(config.vllm_cmdline) if config.vllm_cmdline else None
        self._source = _log_source(config, logs)

    @property
    def command(self) -> VllmCommand | None:
        return self._command

    @property
    def pid(self) -> int | None:
        if self._config.vllm_pid is not None:
            return self._config.vllm_pid
        port = self._config.vllm_port
        return find_listening_pid(port) if port is not None else None

    def environ(self) -> dict[str, str]:
        # vLLM's own environment is not ours to read; the agent's is the best guess there is.
        return {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}

    async def served_pids(self) -> set[int]:
        pid = await asyncio.to_thread(lambda: self.pid)
        return await asyncio.to_thread(tree_pids, pid) if pid is not None else set()

    async def start(self) -> None:
        if self._source is not None:
            await self._source.start()

    async def close(self) -> None:
        if self._source is not None:
            await self._source.close()

    async def stop(self, timeout_s: float | None = None) -> ProcessExit | None:
        raise ControlError("attach mode: vLLM runs outside the agent, which cannot stop it")

    def restart_refusal(self, *, args: bool, env: bool) -> str | None:
        if not (args or env):
            if not self._config.restart_command:
                return "attach mode without a restart_command: configure how to restart vLLM"
            return None
        if not self._config.restart_template:
            return "attach mode without a restart_template: changed arguments need one"
        if args and self._command is None:
            return "attach mode without vllm_cmdline: the command line to change is unknown"
        if args and ARGV_TOKEN not in self._config.restart_template:
            return f"the restart_template has no {ARGV_TOKEN} to put the arguments in"
        if env and ENV_TOKEN not in self._config.restart_template:
            return f"the restart_template has no {ENV_TOKEN} to put the environment in"
        return None

    async def restart(
        self, args: ArgChanges | None = None, env: EnvChanges | None = None
    ) -> dict[str, Any]:
        refusal = self.restart_refusal(args=bool(args), env=bool(env))
        if refusal:
            raise ControlError(refusal)
        command = self._command.with_args(dict(args)) if args and self._command else None
        if args or env:
            argv = render_template(self._config.restart_template, command, env or {})
        else:
            argv = list(self._config.restart_command)
        output = await self._run(argv)
        if command is not None:
            self._command = command
        return {"command": argv, "returncode": 0, "output": output}

    async def _run(self, argv: list[str]) -> str:
        self.logs.say(f"running the restart command: {' '.join(argv)}")
        returncode, output = await run_argv(argv, self._config.command_timeout_s)
        self.logs.say(f"the restart command exited with code {returncode}")
        if returncode != 0:
            raise ControlError(f"{argv[0]} exited with code {returncode}: {output.strip()}")
        return output


def _log_source(config: AgentConfig, logs: LogFanout) -> FileTail | CommandLines | None:
    if config.log_file:
        return FileTail(Path(config.log_file), logs)
    if config.journal_unit:
        return CommandLines(journal_argv(config.journal_unit), logs)
    return None


def render_template(template: list[str], command: VllmCommand | None, env: EnvChanges) -> list[str]:
    """Return `template` with "{vllm_argv}" and "{env}" expanded into argv items."""
    argv: list[str] = []
    for token in template:
        if token == ARGV_TOKEN:
            argv.extend(command.argv() if command is not None else [])
        elif token == ENV_TOKEN:
            argv.extend(f"{name}={value or ''}" for name, value in env.items())
        else:
            argv.append(token)
    return argv


async def run_argv(argv: list[str], timeout_s: float) -> tuple[int, str]:
    """Run `argv` (no shell); return its exit code and the tail of its output."""
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise ControlError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise ControlError(f"{argv[0]} did not finish within {timeout_s:g} s; killed") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:]


# Engine arguments worth reporting, by vLLM's names (real /server_info nests them in configs).
_KNOWN_ARGS = BOOLEAN_FLAGS | INT_ARGS | FLOAT_ARGS | {
    "model", "served_model_name", "max_model_len", "kv_cache_dtype", "quantization", "dtype"
}  # fmt: skip
_RENAMED = {"cache_dtype": "kv_cache_dtype"}  # CacheConfig's name for --kv-cache-dtype


class ServerInfoArgs:
    """The engine arguments a running vLLM reports, asked once per vLLM process.

    /server_info runs vLLM's collect_env, so it is not asked on every poll: once the server
    answers /health, again when its counters restart, and, while it says nothing (no dev
    mode), every RETRY_S.
    """

    RETRY_S = 300.0

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._args: dict[str, Any] = {}
        self._asked_at: float | None = None

    async def engine_args(self, probe: VllmProbe, now: float) -> dict[str, Any]:
        """Return the arguments, asking vLLM first when due (monotonic `now`)."""
        vllm = probe.vllm
        if vllm is None or not vllm.health.ok:
            return self._args
        asked_at = self._asked_at
        due = asked_at is None or (not self._args and now - asked_at >= self.RETRY_S)
        if due or vllm.restarted:
            self._asked_at = now
            self._args = await engine_args_from_server(self.url, self.timeout_s)
        return self._args


async def engine_args_from_server(url: str, timeout_s: float) -> dict[str, Any]:
    """Return the engine arguments vLLM's /server_info reports; {} when it answers nothing."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url.rstrip("/") + "/server_info?config_format=json") as resp,
        ):
            if resp.status != 200:
                return {}
            payload = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}
    return engine_args_from_server_info(payload)


def engine_args_from_server_info(payload: Any) -> dict[str, Any]:
    """Return the known engine arguments in a /server_info answer, flat, by vLLM's names."""
    config = payload.get("vllm_config") if isinstance(payload, dict) else None
    if isinstance(config, str):
        with contextlib.suppress(ValueError):
            config = json.loads(config)
    if not isinstance(config, dict):
        return {}
    found: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):  # vLLM's nested model_config, cache_config, ...
            for inner_key, inner in value.items():
                _keep(found, inner_key, inner)
        else:
            _keep(found, key, value)
    return found


def _keep(found: dict[str, Any], key: str, value: Any) -> None:
    name = _RENAMED.get(key, key)
    if name in _KNOWN_ARGS and isinstance(value, str | int | float | bool):
        found.setdefault(name, value)
