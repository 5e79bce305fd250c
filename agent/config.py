"""The agent's configuration: one dataclass, filled by the CLI (agent/main.py) or the simulator."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

GPU_BACKENDS = ("nvml", "none", "simulated")


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

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("invalid agent configuration: " + "; ".join(problems))

    def __repr__(self) -> str:
        # Keeps the token out of logs and tracebacks.
        return (
            f"AgentConfig(host_name={self.host_name!r}, vllm_url={self.vllm_url!r}, "
            f"listen={self.listen_host}:{self.listen_port}, gpu_backend={self.gpu_backend!r})"
        )

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
    if config.scrape_timeout_s <= 0:
        problems.append("scrape_timeout_s must be positive")
    if config.stall_after_s < 0:
        problems.append("stall_after_s must not be negative")
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
