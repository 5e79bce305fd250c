"""`python -m simulator.vllm_process serve MODEL [vLLM args]`: one simulated vLLM, a real process.

It stands in for `vllm serve` wherever a real process is needed (the agent's supervise mode,
`sentinel-simulate --processes`): the same HTTP endpoints on `--host`/`--port`, vLLM's log
lines on stdout, and the engine arguments it is given honoured (a smaller `--max-num-seqs`
means fewer running requests and less KV-cache pressure; every start loads the model again,
so a restart also clears a leak). Its clock runs at SENTINEL_SIM_SPEED x wall time.

    SENTINEL_SIM_SCENARIO   a scenario name or a path to a .toml (default healthy); its
                            engine_args come first, the command line's override them
    SENTINEL_SIM_SEED       the random seed (default 0)
    SENTINEL_SIM_SPEED      simulated seconds per wall second (default 1)
    SENTINEL_SIM_HOST       the host's name, which seeds its draws with the seed (default gpu-01)
    VLLM_*, NCCL_*, PYTORCH_CUDA_ALLOC_CONF  read as vLLM reads them (VLLM_SERVER_DEV_MODE,
                            VLLM_KEEP_ALIVE_ON_ENGINE_DEATH) and shown by /server_info

The process exits as vLLM does: 0 after SIGTERM or SIGINT (with vLLM's shutdown lines; with
--shutdown-timeout N it first drains running requests for up to N s), 1 once the engine has
died (vLLM's watchdog stops the server 5 s after) or startup failed, 2 for a bad command line.
The scenario's own restart_after_death_s is ignored: whoever supervises the process decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Mapping

from agent.vllm_args import VllmCommand, parse
from simulator import failures
from simulator.catalog import model_spec
from simulator.engine import Phase, SimulatedVllm
from simulator.logs import VllmLog
from simulator.process import terminate
from simulator.scenario import Scenario, load_scenario
from simulator.server import VllmHttpServer

SCENARIO_ENV = "SENTINEL_SIM_SCENARIO"
SEED_ENV = "SENTINEL_SIM_SEED"
SPEED_ENV = "SENTINEL_SIM_SPEED"
HOST_ENV = "SENTINEL_SIM_HOST"
PASSED_ENV_PREFIXES = ("VLLM_", "NCCL_", "PYTORCH_CUDA_ALLOC_CONF")
TICK_S = 0.25
MAX_WAKE_S = 0.1
EXIT_STOPPED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
USAGE = "usage: python -m simulator.vllm_process serve MODEL [vLLM arguments]"


_PENDING: list[str] = []  # lines logged since the last flush_stdout()


class StdoutLog(VllmLog):
    """vLLM's log lines on stdout, held until `flush_stdout()` after each clock step: a pipe
    buffer that filled up mid-step would otherwise send "startup complete" before the port
    listens."""

    def _write(self, lines: list[str]) -> None:
        super()._write(lines)
        _PENDING.extend(lines)


def flush_stdout() -> None:
    if not _PENDING:
        return
    with contextlib.suppress(BrokenPipeError):  # the reader is gone; vLLM carries on
        sys.stdout.write("\n".join(_PENDING) + "\n")
        sys.stdout.flush()
    _PENDING.clear()


def main(argv: list[str] | None = None) -> int:
    try:
        command = _command(sys.argv[1:] if argv is None else argv)
        speed = _speed(os.environ)
        sim = build(command, os.environ)
    except ValueError as exc:  # VllmArgsError, ScenarioError and bad engine arguments
        print(f"vllm serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(serve(sim, command, speed))


def _command(argv: list[str]) -> VllmCommand:
    if not argv or argv[0] != "serve":
        raise ValueError(USAGE)
    return parse(["vllm", *argv])


def _speed(environ: Mapping[str, str]) -> float:
    speed = float(environ.get(SPEED_ENV, "1"))
    if speed <= 0:
        raise ValueError(f"{SPEED_ENV} must be positive, got {speed}")
    return speed


def build(command: VllmCommand, environ: Mapping[str, str]) -> SimulatedVllm:
    """Return the simulated server `command` starts, in the scenario `environ` names."""
    scenario = scenario_for(command, environ)
    name = environ.get(HOST_ENV, "gpu-01")
    seed = int(environ.get(SEED_ENV, "0"))
    return SimulatedVllm(name, scenario, seed, epoch=time.time(), log=StdoutLog())


def scenario_for(command: VllmCommand, environ: Mapping[str, str]) -> Scenario:
    """Return the scenario to run: the named one, with the command line's model and args."""
    base = load_scenario(environ.get(SCENARIO_ENV, "healthy"))
    model = command.model or base.host.model
    model_spec(model)  # an unknown model fails here, as vLLM fails to resolve it
    tp = int(command.get("tensor_parallel_size", 1))
    host = dataclasses.replace(base.host, model=model, gpu_count=max(base.host.gpu_count, tp))
    passed = {k: v for k, v in environ.items() if k.startswith(PASSED_ENV_PREFIXES)}
    return dataclasses.replace(
        base,
        host=host,
        engine_args={**base.engine_args, **command.args},
        env={**base.env, **passed},
        restart_after_death_s=None,
    )


async def serve(sim: SimulatedVllm, command: VllmCommand, speed: float) -> int:
    """Run the server until a signal (exit 0) or until its engine dies (exit 1)."""
    host, port = str(command.get("host", "0.0.0.0")), int(command.get("port", 8000))
    try:
        http = VllmHttpServer(sim, host, port)
    except OSError as exc:
        print(f"OSError: {exc}", file=sys.stderr)
        return EXIT_FAILED
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        clock = _Clock(sim, speed)
        while not stop.is_set():
            await clock.catch_up(http)
            if sim.phase is Phase.DOWN:
                return EXIT_FAILED
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), clock.wake_s)
        await _shut_down(sim, http, clock, float(command.get("shutdown_timeout", 0)))
        return EXIT_STOPPED
    finally:
        await http.close()
        flush_stdout()


class _Clock:
    """Steps the server so that simulated time keeps up with wall time x speed."""

    def __init__(self, sim: SimulatedVllm, speed: float) -> None:
        self.sim = sim
        self.speed = speed
        self.wake_s = min(MAX_WAKE_S, TICK_S / speed)
        self._started = time.monotonic()

    async def catch_up(self, http: VllmHttpServer) -> None:
        target = (time.monotonic() - self._started) * self.speed
        while self.sim.t + TICK_S <= target:
            self.sim.step(TICK_S)
        await http.sync()
        # Only now: a reader that sees "Application startup complete." finds the port open,
        # as with uvicorn, which listens before it says so.
        flush_stdout()


async def _shut_down(
    sim: SimulatedVllm, http: VllmHttpServer, clock: _Clock, drain_s: float
) -> None:
    """Log vLLM's shutdown; with --shutdown-timeout, let running requests finish first."""
    run = sim.run
    if run is None:
        return
    if sim.phase is Phase.SERVING:
        lines = failures.shutdown(run.proc.pid)
        if drain_s > 0:
            sim.emit(_drain_lines(drain_s), sim.t)
            await _drain(sim, http, clock, drain_s)
            lines = [line for line in lines if "API server:" not in line[3]]
        sim.emit(lines, sim.t)
    terminate(run.proc)


def _drain_lines(drain_s: float) -> list[failures.Line]:
    return [
        ("api", "INFO", "api_server.py:1921", "[shutdown] API server: shutdown triggered"),
        ("api", "INFO", "async_llm.py:690",
         f"[shutdown] API server: stopping engine client mode=drain timeout={drain_s:g}s"),
    ]  # fmt: skip


async def _drain(sim: SimulatedVllm, http: VllmHttpServer, clock: _Clock, drain_s: float) -> None:
    run = sim.run
    assert run is not None
    run.paused = "wait"  # no new request is scheduled; the running ones go on
    until_t = sim.t + drain_s
    while run.running and sim.t < until_t and sim.phase is Phase.SERVING:
        await clock.catch_up(http)
        await asyncio.sleep(clock.wake_s)


if __name__ == "__main__":
    sys.exit(main())
