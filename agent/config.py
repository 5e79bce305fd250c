"""The agent's configuration: one dataclass, filled by the CLI (agent/main.py) or the simulator.

The mode follows from it: with a `vllm_command` the agent supervises vLLM (runs it as its
child); without one it attaches to a vLLM started elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agent.vllm_args import VllmArgsError, parse

GPU_BACKENDS = ("nvml", "none", "simulated")
# Only in attach mode: in supervise mode the agent owns the process and its output.
ATTACH_ONLY = ("log_file", "journal_unit", "vllm_cmdline", "restart_command", "restart_template")
TEMPLATE_TOKENS = ("{vllm_argv}", "{env}")


@dataclass(kw_only=True)
class AgentConfig:
    host_name: str
    token: str  # bearer token the control plane must send
    vllm_url: str = "http://127.0.0.1:8000"
    listen_host: str = "127.0.0.1"
    listen_port: int = 9300
    gpu_backend: str = "nvml"  # "nvml" | "none" | "simulated"
    vllm_pid: int | None = None  # else found by the process listening on vllm_url's port
    scrape_timeout_s: float = 2.0
    stall_after_s: float = 15.0  # no forward progress this long with requests running
    # Filesystems to watch, by a path on each; empty: agent.collectors.system.default_paths().
    disk_paths: list[str] = field(default_factory=list)
    # supervise mode
    vllm_command: list[str] = field(default_factory=list)  # the vLLM argv the agent runs
    restart_on_failure: bool = False  # restart vLLM after an exit the agent did not ask for
    restart_delay_s: float = 5.0
    stop_timeout_s: float = 30.0  # SIGTERM, then SIGKILL after this long
    validate_on_start: bool = True  # run the pre-startup validator before starting vLLM
    block_on_failed_check: bool = False  # a failed check keeps vLLM from starting
    stats_port: int | None = None  # UDP port for the vLLM stat-logger plugin; None: off
    # attach mode
    log_file: str | None = None  # vLLM's log file, followed like `tail -F`
    journal_unit: str | None = None  # or the systemd unit whose journal holds vLLM's output
    vllm_cmdline: list[str] = field(default_factory=list)  # how vLLM was started
    restart_command: list[str] = field(default_factory=list)  # argv that restarts vLLM
    restart_template: list[str] = field(default_factory=list)  # argv with {vllm_argv}, {env}
    command_timeout_s: float = 120.0  # a restart command running longer is killed

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("invalid agent configuration: " + "; ".join(problems))

    def __repr__(self) -> str:
        # Keeps the token out of logs and tracebacks.
        return (
            f"AgentConfig(host_name={self.host_name!r}, mode={self.mode!r}, "
            f"vllm_url={self.vllm_url!r}, listen={self.listen_host}:{self.listen_port}, "
            f"gpu_backend={self.gpu_backend!r})"
        )

    @property
    def mode(self) -> str:
        return "supervise" if self.vllm_command else "attach"

    @property
    def vllm_port(self) -> int | None:
        """Return the TCP port of `vllm_url` (80/443 when the URL names none)."""
        parts = urlsplit(self.vllm_url)
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _problems(config: AgentConfig) -> list[str]:
    problems = []
    if not config.host_name or len(config.host_name) > 200:
        problems.append("host_name must be 1 to 200 characters")
    if not config.token:
        problems.append("token is empty")
    problems.extend(_url_problems(config.vllm_url))
    if not 0 <= config.listen_port <= 65535:
        problems.append(f"listen_port {config.listen_port} is out of range")
    if config.gpu_backend not in GPU_BACKENDS:
        problems.append(f"gpu_backend {config.gpu_backend!r} is not one of {GPU_BACKENDS}")
    if config.vllm_pid is not None and config.vllm_pid <= 0:
        problems.append(f"vllm_pid {config.vllm_pid} is not a pid")
    for name in ("scrape_timeout_s", "stop_timeout_s", "command_timeout_s"):
        if getattr(config, name) <= 0:
            problems.append(f"{name} must be positive")
    for name in ("stall_after_s", "restart_delay_s"):
        if getattr(config, name) < 0:
            problems.append(f"{name} must not be negative")
    if not _strings(config.disk_paths):
        problems.append("disk_paths must be a list of paths")
    return problems + _mode_problems(config) + _argv_problems(config)


def _mode_problems(config: AgentConfig) -> list[str]:
    if config.mode == "attach":
        if config.log_file and config.journal_unit:
            return ["log_file and journal_unit: choose one log source"]
        return []
    problems = [f"{name} is for attach mode" for name in ATTACH_ONLY if getattr(config, name)]
    if config.vllm_pid is not None:
        problems.append("vllm_pid is for attach mode: a supervised vLLM is the agent's child")
    return problems


def _strings(value: Any) -> bool:
    """Return whether `value` is a list of non-empty strings without NUL (argv, paths)."""
    return isinstance(value, list) and all(
        isinstance(v, str) and v and "\0" not in v for v in value
    )


def _argv_problems(config: AgentConfig) -> list[str]:
    problems = []
    for name in ("vllm_command", "vllm_cmdline", "restart_command", "restart_template"):
        if not _strings(getattr(config, name)):
            problems.append(f"{name} must be a list of non-empty strings")
    for name in ("vllm_command", "vllm_cmdline"):
        try:
            if getattr(config, name):
                parse(getattr(config, name))
        except VllmArgsError as exc:
            problems.append(f"{name}: {exc}")
    template = config.restart_template
    if template and not any(t in template for t in TEMPLATE_TOKENS):
        problems.append(f"restart_template uses neither of {', '.join(TEMPLATE_TOKENS)}")
    if "{vllm_argv}" in template and not config.vllm_cmdline:
        problems.append("restart_template uses {vllm_argv}: give vllm_cmdline too")
    return problems


def _url_problems(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError as exc:
        return [f"vllm_url {url!r}: {exc}"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"vllm_url {url!r} is not an http(s) URL"]
    return []
