"""Run vLLM as the agent's child: its output as LogLines; stop, restart, restart with changes.

    supervisor = ProcessSupervisor(parse(["vllm", "serve", MODEL]), logs=LogFanout())
    await supervisor.start()
    await supervisor.restart(args={"max_num_seqs": 64}, env={"NCCL_P2P_DISABLE": "1"})
    await supervisor.stop()

1. The argv is executed as a list, never through a shell.
2. The child leads its own session and process group; vLLM's EngineCore and workers join it,
   so a stop reaches them all: SIGTERM to the group, wait up to the deadline, SIGKILL, and
   SIGKILL again for any member left behind once the API server has exited.
3. stdout and stderr are read line by line into `logs`; the agent's own lines (started,
   exited with code N) go into the same stream (agent/control.py shows their format).
4. An exit the agent did not ask for is logged and, if the restart policy says so, followed
   by a restart after `delay_s` (at most `max_restarts` within `window_s`). The policy is off
   by default: mitigations decide what a crashed server is restarted with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from agent.control import ArgChanges, ControlError, EnvChanges, ProcessExit, started_text
from agent.logsources import LogFanout, pump
from agent.processes import FollowedProcess, group_pids, tree_pids
from agent.vllm_args import VllmCommand

log = logging.getLogger(__name__)

# Never handed to vLLM: the agent's own secret.
PRIVATE_ENV = frozenset({"SENTINEL_AGENT_TOKEN"})
# Output written just before an exit is still in the pipes; grandchildren holding the pipes
# open must not delay the exit report longer than this.
PIPE_DRAIN_S = 1.0
KILL_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    on_failure: bool = False
    delay_s: float = 5.0
    max_restarts: int = 5
    window_s: float = 600.0


class ProcessSupervisor:
    mode = "supervise"

    def __init__(
        self,
        command: VllmCommand,
        *,
        logs: LogFanout,
        env: EnvChanges | None = None,
        policy: RestartPolicy | None = None,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.logs = logs
        self.policy = policy or RestartPolicy()
        self.stop_timeout_s = stop_timeout_s
        self.last_exit: ProcessExit | None = None
        self.process = FollowedProcess(lambda: self.pid)
        self._command = command
        self._env: dict[str, str | None] = dict(env or {})
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._stopping = False
        self._restart_times: deque[float] = deque()
        self._auto_restart: asyncio.Task[None] | None = None
        self._exit_callbacks: list[Callable[[ProcessExit], None]] = []

    @property
    def command(self) -> VllmCommand:
        return self._command

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        for name, value in self._env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    async def served_pids(self) -> set[int]:
        pid = self.pid
        if pid is None:
            return set()
        return await asyncio.to_thread(lambda: tree_pids(pid) | group_pids(pid))

    def on_exit(self, callback: Callable[[ProcessExit], None]) -> None:
        """Call `callback` after each exit of the vLLM process, once its last lines are read."""
        self._exit_callbacks.append(callback)

    def restart_refusal(self, *, args: bool, env: bool) -> str | None:
        return None

    async def start(self) -> None:
        async with self._lock:
            if not self.alive:
                await self._spawn()

    async def stop(self, timeout_s: float | None = None) -> ProcessExit | None:
        """Stop vLLM (see the module docstring); return its exit, None if none was running."""
        self._cancel_auto_restart()
        async with self._lock:
            return await self._terminate(timeout_s or self.stop_timeout_s)

    async def restart(
        self, args: ArgChanges | None = None, env: EnvChanges | None = None
    ) -> dict[str, Any]:
        """Stop vLLM if it runs and start it again with `args` / `env` changed."""
        self._cancel_auto_restart()
        async with self._lock:
            before = self.pid
            await self._terminate(self.stop_timeout_s)
            if args:
                self._command = self._command.with_args(dict(args))
            if env:
                self._env.update(env)
            await self._spawn()
            return {"pid_before": before, "pid": self.pid, "argv": self._command.argv()}

    async def close(self) -> None:
        """Stop vLLM and everything reading it."""
        await self.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _spawn(self) -> None:
        argv = self._command.argv()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.environ(),
                start_new_session=True,
            )
        except OSError as exc:
            message = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            self.logs.say(message)
            raise ControlError(message) from None
        self._proc, self._stopping = proc, False
        self.logs.say(started_text(proc.pid, argv))
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [self._task(pump(proc.stdout, self.logs, "stdout")),
                 self._task(pump(proc.stderr, self.logs, "stderr"))]  # fmt: skip
        self._watch = self._task(self._watch_exit(proc, pumps))

    def _task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watch_exit(
        self, proc: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]]
    ) -> None:
        returncode = await proc.wait()
        await asyncio.wait(pumps, timeout=PIPE_DRAIN_S)
        exit = ProcessExit(proc.pid, returncode, time.time(), expected=self._stopping)
        self.last_exit = exit
        self.logs.say(exit.describe())
        if not exit.expected:
            log.warning("%s", exit.describe())
            self._maybe_restart()
        for callback in self._exit_callbacks:
            callback(exit)

    async def _terminate(self, timeout_s: float) -> ProcessExit | None:
        proc, watch = self._proc, self._watch
        if proc is None or watch is None:
            return None
        if proc.returncode is None:
            self._stopping = True
            self.logs.say(
                f"stopping vLLM process {proc.pid}: SIGTERM, SIGKILL after {timeout_s:g} s"
            )
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(watch), timeout_s)
            except TimeoutError:
                self.logs.say(f"vLLM process {proc.pid} still runs after {timeout_s:g} s: SIGKILL")
                _signal_group(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(watch), KILL_WAIT_S)
        except TimeoutError:
            raise ControlError(f"vLLM process {proc.pid} did not exit after SIGKILL") from None
        _signal_group(proc.pid, signal.SIGKILL)  # workers the API server left behind
        return self.last_exit

    def _maybe_restart(self) -> None:
        if not self.policy.on_failure:
            return
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > self.policy.window_s:
            self._restart_times.popleft()
        if len(self._restart_times) >= self.policy.max_restarts:
            self.logs.say(
                f"not restarting vLLM: {len(self._restart_times)} restarts in the last "
                f"{self.policy.window_s:g} s (restart policy)"
            )
            return
        self._restart_times.append(now)
        self._auto_restart = self._task(self._restart_later(self.policy.delay_s))

    async def _restart_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        async with self._lock:
            if self.alive:
                return  # someone started it meanwhile
            self.logs.say("restarting vLLM after an unexpected exit (restart policy)")
            try:
                await self._spawn()
            except ControlError as exc:
                log.error("restart policy: %s", exc)

    def _cancel_auto_restart(self) -> None:
        task, self._auto_restart = self._auto_restart, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()


def _signal_group(pgid: int, signum: int) -> None:
    # The group outlives its leader while any member runs; once it is empty this is a no-op.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
