"""Helpers for the supervisor, attach and action tests: a simulated vLLM as a real process.

(No tests here; the name keeps it beside the tests that use it.)
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from agent.loglines import LogLine
from agent.logsources import LogFanout
from agent.supervisor import ProcessSupervisor, RestartPolicy
from agent.vllm_args import VllmCommand, parse

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SPEED = "20"  # simulated seconds per wall second: startup (~4.5 s simulated) takes ~0.25 s
SERVING = "Application startup complete."


def sim_command(port: int, *args: str) -> VllmCommand:
    """Return the command line of a simulated vLLM serving on 127.0.0.1:`port`."""
    program = [sys.executable, "-m", "simulator.vllm_process", "serve", MODEL]
    return parse([*program, "--host", "127.0.0.1", "--port", str(port), *args])


def sim_env(scenario: str | Path = "healthy", **extra: str) -> dict[str, str | None]:
    return {"SENTINEL_SIM_SCENARIO": str(scenario), "SENTINEL_SIM_SPEED": SPEED, **extra}


def busy_scenario(tmp_path: Path, rate_rps: float = 40.0, extra: str = "") -> Path:
    """Write a scenario whose load keeps more than 64 requests running; return its path."""
    path = tmp_path / "busy.toml"
    path.write_text(f"[host]\nstartup_scale = 0.1\n\n[load]\nrate_rps = {rate_rps}\n{extra}")
    return path


def supervisor(
    port: int, *args: str, env: dict[str, str | None] | None = None, **policy: float | bool
) -> ProcessSupervisor:
    return ProcessSupervisor(
        sim_command(port, *args),
        logs=LogFanout(),
        env=env if env is not None else sim_env(),
        policy=RestartPolicy(**policy),  # type: ignore[arg-type]
        stop_timeout_s=10.0,
    )


class Recorder:
    """Every line a LogFanout publishes, in order."""

    def __init__(self, logs: LogFanout) -> None:
        self.lines: list[LogLine] = []
        logs.subscribe(self.lines.append)

    def texts(self) -> list[str]:
        return [line.text for line in self.lines]

    def index(self, fragment: str, start: int = 0) -> int:
        return next(i for i, t in enumerate(self.texts()) if i >= start and fragment in t)

    def count(self, fragment: str) -> int:
        return sum(fragment in t for t in self.texts())

    async def wait_for(self, fragment: str, timeout_s: float = 15.0, times: int = 1) -> None:
        await until(lambda: self.count(fragment) >= times, timeout_s, f"log line {fragment!r}")


async def until(done: Callable[[], bool], timeout_s: float = 15.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        await asyncio.sleep(0.02)


async def metric(port: int, name: str) -> float | None:
    """Return the sum of a /metrics family's values, None when the server does not answer."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text() if resp.status == 200 else ""
    except aiohttp.ClientConnectionError:
        return None
    values = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + "{")]
    return sum(values) if values else None


async def until_metric(
    port: int, name: str, ok: Callable[[float], bool], timeout_s: float = 20.0
) -> float:
    """Return the first value of `name` that satisfies `ok`; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await metric(port, name)
        if value is not None and ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never satisfied the test; last {value}")
        await asyncio.sleep(0.05)
