"""A simulated vLLM under the agent's supervision, in-process: the agent's VllmControl over
SimulatedVllm, so actions on a simulated host restart it with changed arguments exactly as
on a real one, on the simulated clock.

The command line is the truth: `SimulatedSupervisor.command` is a VllmCommand, and every
(re)start gives the engine the arguments it names (`engine_args_from`). vLLM's lines reach
the agent's LogFanout as the engine writes them, with the agent's own "started" and
"exited with code N" lines in their place (agent/control.py). A scenario's
`restart_after_death_s` plays the agent's restart policy, on the simulated clock.

`SimulatedSignaller` ends simulated GPU processes (a host's external ones, a scenario's
foreign one); it never signals a real process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.control import ArgChanges, EnvChanges, ProcessExit, started_text
from agent.loglines import LogLine
from agent.logsources import LogFanout
from agent.vllm_args import VllmCommand
from simulator import failures
from simulator.catalog import DEFAULT_MODEL
from simulator.engine import Phase, SimulatedVllm
from simulator.engine_args import EngineArgs
from simulator.logs import VllmLog
from simulator.process import CurrentProcess, terminate
from simulator.run import ServerRun

EXIT_FAILED = 1  # what the simulated process exits with after an engine death or failed start
FIELDS = {f.name for f in dataclasses.fields(EngineArgs)} - {"extra"}


def engine_args_from(command: VllmCommand) -> EngineArgs:
    """Return the engine arguments a simulated vLLM started with `command` runs with."""
    return EngineArgs(model=command.model or DEFAULT_MODEL).with_changes(command.args)


def command_for(given: EngineArgs) -> VllmCommand:
    """Return the `vllm serve` command line that gives `given`."""
    args = given.non_default()
    model = args.pop("model")
    return VllmCommand(["vllm", "serve"], model, args)


class FanoutLog(VllmLog):
    """vLLM's log (memory, file) that also hands each batch of lines to `on_lines`."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path)
        self.on_lines: Callable[[list[str]], None] | None = None

    def _write(self, lines: list[str]) -> None:
        super()._write(lines)
        if self.on_lines is not None:
            self.on_lines(lines)


class SimulatedSupervisor:
    mode = "supervise"

    def __init__(
        self,
        sim: SimulatedVllm,
        log: FanoutLog,
        logs: LogFanout,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.sim = sim
        self.logs = logs
        self.command: VllmCommand = command_for(sim.given)
        self.process = CurrentProcess(self._current)
        self.last_exit: ProcessExit | None = None
        self._on_change = on_change
        self._run: ServerRun | None = None  # the run whose start was reported
        self._stopping = False
        log.on_lines = self._publish

    @property
    def pid(self) -> int | None:
        proc = self._current()
        return proc.pid if proc is not None else None

    def environ(self) -> dict[str, str]:
        return dict(self.sim.env)

    async def served_pids(self) -> set[int]:
        run = self.sim.run
        return {p.pid for p in run.proc.walk() if p.running} if run is not None else set()

    def restart_refusal(self, *, args: bool, env: bool) -> str | None:
        return None

    async def start(self) -> None:
        if self.sim.phase is Phase.DOWN:
            self.sim.given = engine_args_from(self.command)
            self.sim.restart()
            await self._changed()

    async def close(self) -> None:
        """The fleet owns the simulated server: closing the agent leaves it running."""

    async def stop(self, timeout_s: float | None = None) -> ProcessExit | None:
        run = self.sim.run
        if run is None or self.sim.phase is Phase.DOWN:
            return None
        self._stopping = True
        if self.sim.phase is Phase.SERVING:
            self.sim.emit(failures.shutdown(run.proc.pid), self.sim.t)
        _bring_down(self.sim, run)
        self.after_step()
        await self._changed()
        return self.last_exit

    async def restart(
        self, args: ArgChanges | None = None, env: EnvChanges | None = None
    ) -> dict[str, Any]:
        before = self.pid
        self._stopping = self.sim.phase is not Phase.DOWN
        if args:
            self.command = self.command.with_args(dict(args))
        for name, value in (env or {}).items():
            if value is None:
                self.sim.env.pop(name, None)
            else:
                self.sim.env[name] = value
        self.sim.given = engine_args_from(self.command)
        self.sim.restart()
        self.after_step()
        await self._changed()
        return {"pid_before": before, "pid": self.pid, "argv": self.command.argv()}

    async def redeploy(self) -> None:
        """A new deployment, planned (not a crash): the scenario's own arguments again and its
        timeline from the start, so a fault a mitigation cured comes back."""
        await self.stop()  # as vLLM stops: its GPU memory is free for the next process
        self.sim.redeploy()
        self.command = command_for(self.sim.given)
        self.after_step()
        await self._changed()

    def after_step(self) -> None:
        """Report an exit, then a start, if the engine's process changed since last time."""
        run = self.sim.run
        if self._run is not None and (run is not self._run or not self._run.proc.running):
            self._report_exit(self._run)
        if run is not None and run.proc.running and run is not self._run:
            self._run = run
            self.logs.say(started_text(run.proc.pid, self.command.argv()))

    def _report_exit(self, run: ServerRun) -> None:
        code = 0 if self._stopping else EXIT_FAILED
        at = self.logs.clock.time()  # the simulated clock the host's agent reads
        self.last_exit = ProcessExit(run.proc.pid, code, at, expected=self._stopping)
        self.logs.say(self.last_exit.describe())
        self._run, self._stopping = None, False

    def _publish(self, lines: list[str]) -> None:
        # A line from a new process comes after the old one's exit and the new one's start.
        if self.sim.run is not self._run:
            self.after_step()
        now = self.logs.clock.time()
        for text in lines:
            self.logs.publish(LogLine(at=now, text=text, stream="stdout"))

    def _current(self) -> Any:
        run = self.sim.run
        return run.proc if run is not None and run.proc.running else None

    async def _changed(self) -> None:
        if self._on_change is not None:
            await self._on_change()


def _bring_down(sim: SimulatedVllm, run: ServerRun) -> None:
    """End the server's process as a graceful stop does: GPUs freed, no restart scheduled."""
    terminate(run.proc)
    sim.phase = Phase.DOWN
    sim.restart_at = None
    run.gpu_bytes = 0
    run.leaked_bytes = 0.0
    sim.place_gpu_processes()
    sim.version += 1


class SimulatedSignaller:
    """Ends simulated GPU processes; pids are the simulation's, never the machine's."""

    def __init__(self, sim: SimulatedVllm) -> None:
        self.sim = sim

    def identity(self, pid: int) -> float | None:
        listed = {p.pid for g in self.sim.gpus for p in g.processes}
        return 0.0 if pid in listed else None

    def signal(self, pid: int, signum: int) -> None:
        if self.identity(pid) is None:
            raise ProcessLookupError(pid)
        run = self.sim.run
        if run is not None and any(p.pid == pid for p in run.proc.walk()):
            raise PermissionError(f"{pid} is the simulated vLLM itself")
        self.sim.remove_external_process(pid)
        self._end_foreign(pid)

    def _end_foreign(self, pid: int) -> None:
        """A scenario's foreign process ends for good: its effect is gone from the timeline."""
        sim = self.sim
        effects = tuple(
            e for e in sim.scenario.effects
            if not (e.kind == "foreign_gpu_process" and e.params.get("pid") == pid)
        )  # fmt: skip
        sim.scenario = dataclasses.replace(sim.scenario, effects=effects)
        foreign = tuple(f for f in sim.conditions.foreign if f.pid != pid)
        sim.conditions = dataclasses.replace(sim.conditions, foreign=foreign)
        sim.place_gpu_processes()
