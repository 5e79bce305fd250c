"""The agent's hold on vLLM: one interface, whether the agent runs vLLM or watches it.

    supervise  agent/supervisor.py ProcessSupervisor: vLLM is the agent's child process
               (the simulated fleet implements the same interface over its engines)
    attach     agent/attach.py AttachedVllm: vLLM runs elsewhere (systemd, docker); restarts
               go through a configured argv

Both put vLLM's output, and the agent's own lines about the process, into one LogFanout
(`control.logs`), so a subscriber sees starts, output and exits in the order they happened.
The agent's lines (stream "agent") read:

    sentinel-agent: vLLM process 4242 started: vllm serve MODEL --max-num-seqs 64
    sentinel-agent: vLLM process 4242 exited with code 1
    sentinel-agent: vLLM process 4242 exited with code -9 (SIGKILL)
    sentinel-agent: vLLM process 4242 exited with code 0 (stopped by the agent)
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent.logsources import LogFanout
from agent.vllm_args import VllmCommand

# Engine arguments changed on a restart: vLLM's names; None removes the flag.
ArgChanges = Mapping[str, Any]
# Environment changed on a restart: None unsets the variable.
EnvChanges = Mapping[str, str | None]


class ControlError(Exception):
    """vLLM could not be started, stopped or restarted; the message says why."""


@dataclass(frozen=True, slots=True)
class ProcessExit:
    pid: int
    returncode: int  # negative: killed by that signal number, as asyncio reports it
    at: float  # epoch seconds
    expected: bool  # the agent asked it to stop

    @property
    def signal_name(self) -> str | None:
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    def describe(self) -> str:
        """Return the agent's log line for this exit (see the module docstring)."""
        text = f"vLLM process {self.pid} exited with code {self.returncode}"
        notes = [
            n for n in (self.signal_name, "stopped by the agent" if self.expected else "") if n
        ]
        return f"{text} ({', '.join(notes)})" if notes else text


def started_text(pid: int, argv: list[str]) -> str:
    return f"vLLM process {pid} started: {' '.join(argv)}"


class VllmControl(Protocol):
    mode: str  # "supervise" or "attach"
    logs: LogFanout

    @property
    def command(self) -> VllmCommand | None:
        """The vLLM command line as the agent knows it (None in attach mode without one)."""

    @property
    def pid(self) -> int | None:
        """The vLLM (API server) process id, when known and alive."""

    @property
    def process(self) -> Any | None:
        """A psutil-like handle that follows the current vLLM process; None: find it by pid."""

    def environ(self) -> dict[str, str]:
        """Return the environment vLLM runs with (as far as the agent knows it)."""

    async def served_pids(self) -> set[int]:
        """Return the pids of the served vLLM process tree (empty when none runs)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def stop(self, timeout_s: float | None = None) -> ProcessExit | None:
        """Stop vLLM gracefully (SIGTERM, then SIGKILL after `timeout_s`)."""

    async def restart(
        self, args: ArgChanges | None = None, env: EnvChanges | None = None
    ) -> dict[str, Any]:
        """Restart vLLM, with changed engine arguments or environment; return what was done."""

    def restart_refusal(self, *, args: bool, env: bool) -> str | None:
        """Return why a restart (with changed args / env) cannot be done here, or None."""
