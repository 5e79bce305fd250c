"""The agent: runs the collectors concurrently and assembles one Checkpoint per collection.

`collect()` never raises for a collector's failure: whatever a collector cannot produce is
named in `checkpoint.missing` (`vllm`, `vllm_metrics`, `gpu`, `process`, `system`) with
the reason. Concurrent calls share one collection in flight, so a burst of polls costs one
scrape; each caller then gets the events it asked for (`events_since`).

The agent's parts, for whoever adds to it:
    agent.vllm      its hold on vLLM (agent/control.py): supervise or attach mode
    agent.logs      vLLM's output and the agent's own lines: `agent.logs.subscribe(callback)`
    agent.events    the EventLog: transitions, errors, GPU events, validation reports
    agent.actions   the action executor behind POST /v1/actions
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from agent.actions import REGISTRY
from agent.actions.base import ActionContext
from agent.actions.executor import ActionExecutor
from agent.attach import AttachedVllm, ServerInfoArgs
from agent.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointError,
    Gpu,
    decode,
    encode,
    replace,
)
from agent.clock import SYSTEM_CLOCK, Clock
from agent.collectors.gpu import GpuCollector
from agent.collectors.process import ProcessCollector
from agent.collectors.system import SystemCollector
from agent.collectors.vllm import VllmCollector, VllmProbe
from agent.config import AgentConfig
from agent.control import VllmControl
from agent.events import EventLog
from agent.exception_monitor import ExceptionMonitor
from agent.gpu_health import GpuHealthDiff, XidWatcher
from agent.loglines import LogLine
from agent.logsources import LogFanout
from agent.processes import OsSignaller, Signaller
from agent.step_stats import StepStatsReceiver
from agent.supervisor import ProcessSupervisor, RestartPolicy
from agent.tracker import StateTracker
from agent.vllm_args import parse

log = logging.getLogger(__name__)

T = TypeVar("T")


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        nvml: Any | None = None,
        process_source: Any | None = None,
        system_source: Any | None = None,
        vllm: VllmControl | None = None,
        signaller: Signaller | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.clock = clock
        self.started_at = clock.time()
        self.seq = 0
        self.events = EventLog()
        self.vllm = vllm if vllm is not None else default_control(config)
        self.logs = self.vllm.logs
        self._vllm = VllmCollector(config.vllm_url, timeout_s=config.scrape_timeout_s, clock=clock)
        self.nvml, self._gpu_unavailable = _nvml(config.gpu_backend, nvml)
        self._gpu = GpuCollector(self.nvml) if self.nvml is not None else None
        source = process_source if process_source is not None else self.vllm.process
        self._process = ProcessCollector(source, pid=config.vllm_pid, port=config.vllm_port)
        self._system = SystemCollector(system_source, config.disk_paths)
        self._lifecycle = StateTracker(self.events, config.stall_after_s)
        self._exceptions = ExceptionMonitor(self.events)
        self.logs.subscribe(self._read_log_line)
        self._gpu_health = GpuHealthDiff(self.events)
        self._xids = (
            XidWatcher(self.nvml, self.events, clock=clock.time) if self.nvml is not None else None
        )
        # The plugin stamps its datagrams with vLLM's real monotonic clock: keep that one.
        self._steps = StepStatsReceiver() if config.stats_port is not None else None
        self._in_flight: asyncio.Future[Checkpoint] | None = None
        self._server_info = ServerInfoArgs(config.vllm_url, config.scrape_timeout_s)
        if signaller is None and config.gpu_backend == "nvml":
            signaller = OsSignaller()  # a simulated NVML lists pids that are not this machine's
        self.actions = ActionExecutor(REGISTRY, self._action_context(signaller))

    async def start(self) -> None:
        """Start watching: GPU events, the plugin's step stats, then vLLM itself.

        In supervise mode the pre-startup validator runs first; with `block_on_failed_check`
        a failed check keeps vLLM from starting (the checkpoints say why).
        """
        if self._xids is not None:
            self._xids.start()
        if self._steps is not None and self.config.stats_port is not None:
            await self._steps.start("127.0.0.1", self.config.stats_port)
        supervised = self.vllm.mode == "supervise"
        if supervised and self.config.validate_on_start and await self._validate_before_start():
            return
        await self.vllm.start()

    async def collect(self, events_since: int | None = None) -> Checkpoint:
        """Return a fresh checkpoint with the events after `events_since` (all kept if None).

        Callers arriving during a collection share its result.
        """
        if self._in_flight is None:
            self._in_flight = asyncio.ensure_future(self._collect())
            self._in_flight.add_done_callback(self._collection_done)
        # shield: one caller giving up must not cancel the collection the others wait for.
        checkpoint = await asyncio.shield(self._in_flight)
        return self._with_events(checkpoint, events_since or 0)

    async def close(self) -> None:
        if self._xids is not None:
            await asyncio.to_thread(self._xids.stop)
        if self._steps is not None:
            self._steps.close()
        await self.actions.close()
        await self.vllm.close()
        await self._vllm.close()
        if self._gpu is not None:
            self._gpu.close()

    def _read_log_line(self, line: LogLine) -> None:
        self._exceptions.feed(line)
        self._lifecycle.feed_log(line)

    async def _validate_before_start(self) -> bool:
        """Run the validator and keep its report; return True when it blocks the start."""
        from agent.validator import run_validation

        self._lifecycle.validating(self.clock.time())
        report = await asyncio.to_thread(
            run_validation,
            self.vllm.command,
            vllm_url=self.config.vllm_url,
            nvml=self.nvml,
            environ=self.vllm.environ(),
            trigger="startup",
            now=self.clock.time(),
        )
        failed = [c.name for c in report.checks if c.status == "fail"]
        blocked = bool(failed) and self.config.block_on_failed_check
        self.events.add(dataclasses.replace(report, blocked=blocked))
        if blocked:
            reason = "vLLM not started: pre-startup checks failed: " + ", ".join(failed)
            log.error("%s", reason)
            self._lifecycle.blocked(self.clock.time(), reason)
        return blocked

    def _action_context(self, signaller: Signaller | None) -> ActionContext:
        return ActionContext(
            vllm=self.vllm,
            vllm_url=self.config.vllm_url,
            events=self.events,
            nvml=self.nvml,
            nvml_unavailable=self._gpu_unavailable,
            signaller=signaller,
        )

    def _with_events(self, checkpoint: Checkpoint, since: int) -> Checkpoint:
        batch = self.events.since(since)
        return replace(
            checkpoint,
            event_seq=self.events.last_id,
            transitions=batch.transitions,
            errors=batch.errors,
            gpu_events=batch.gpu_events,
            validations=batch.validations,
        )

    async def _engine_args(self, probe: VllmProbe, now: float) -> dict[str, Any]:
        """Return vLLM's engine arguments: the command line's, else what /server_info says."""
        command = self.vllm.command
        if command is not None:
            return dict(command.args)
        return await self._server_info.engine_args(probe, now)

    def _collection_done(self, future: asyncio.Future[Checkpoint]) -> None:
        if self._in_flight is future:
            self._in_flight = None

    async def _collect(self) -> Checkpoint:
        collected_at, started = self.clock.time(), self.clock.monotonic()
        missing: dict[str, str] = {}
        probe, gpus, process, system = await asyncio.gather(
            _guarded("vllm", missing, self._vllm.collect()),
            _guarded("gpu", missing, self._collect_gpus(started)),
            _guarded("process", missing, self._process.collect(started, collected_at)),
            _guarded("system", missing, self._system.collect()),
        )
        probe = probe or VllmProbe(vllm=None)
        missing.update(probe.missing)
        gpu_list = _unpack("gpu", gpus, missing) or []
        proc = _unpack("process", process, missing)
        machine = _unpack("system", system, missing)
        for error in self._exceptions.flush(self.clock.time()):
            self._lifecycle.on_error(error)  # before update(): a death's cause comes first
        self._gpu_health.update(gpu_list, collected_at)
        if self._xids is not None and self._xids.missing_reason:
            missing["xid_events"] = self._xids.missing_reason
        state, detail = self._lifecycle.update(
            probe,
            process_alive=self._process.alive,
            gpus=gpu_list,
            now_mono=started,
            now_epoch=collected_at,
        )
        engine_args = await _guarded("engine_args", missing, self._engine_args(probe, started))
        self.seq += 1
        return _validated(
            Checkpoint(
                version=CHECKPOINT_VERSION,
                host=self.config.host_name,
                seq=self.seq,
                agent_started_at=self.started_at,
                collected_at=collected_at,
                collect_duration_s=self.clock.monotonic() - started,
                lifecycle_state=state,
                lifecycle_detail=detail,
                vllm=probe.vllm,
                gpus=gpu_list,
                gpu_backend=self.config.gpu_backend,
                process=proc,
                system=machine,
                missing=missing,
                mode=self.vllm.mode,
                engine_args=engine_args or {},
                startup=self._lifecycle.startup,
                steps=self._steps.take() if self._steps is not None else None,
            )
        )

    async def _collect_gpus(self, now: float) -> tuple[list[Gpu], str | None]:
        if self._gpu is None:
            return [], None if self.config.gpu_backend == "none" else self._gpu_unavailable
        if self.config.gpu_backend == "nvml":
            # Real NVML calls block for up to milliseconds each; the simulated one does not.
            return await asyncio.to_thread(self._gpu.collect, now)
        return self._gpu.collect(now)


def _validated(cp: Checkpoint) -> Checkpoint:
    """Return `cp` as the control plane will accept it: a section that fails the format's
    checks (a value out of range from a misbehaving source) is dropped and named in
    `missing`, so one bad figure cannot cost the whole checkpoint."""
    try:
        return decode(encode(cp))
    except CheckpointError as first:
        log.warning("checkpoint failed validation: %s", first)
    sections: dict[str, Any] = {"vllm": None, "gpus": [], "process": None, "system": None}
    for name, empty in sections.items():
        try:
            decode(encode(replace(cp, **{n: e for n, e in sections.items() if n != name})))
        except CheckpointError as exc:
            cp = replace(cp, **{name: empty})
            cp.missing[name] = f"invalid: {exc}"
    return decode(encode(cp))


def default_control(config: AgentConfig) -> VllmControl:
    """Return the agent's hold on vLLM for `config`: a supervisor, or attach mode."""
    logs = LogFanout()
    if config.mode == "attach":
        return AttachedVllm(config, logs)
    policy = RestartPolicy(on_failure=config.restart_on_failure, delay_s=config.restart_delay_s)
    return ProcessSupervisor(
        parse(config.vllm_command), logs=logs, policy=policy, stop_timeout_s=config.stop_timeout_s
    )


def _nvml(backend: str, nvml: Any | None) -> tuple[Any | None, str | None]:
    """Return the NVML object for `backend`, or None and why GPUs will be missing."""
    if backend == "none":
        return None, "gpu_backend is 'none'"
    if nvml is not None:
        return nvml, None
    if backend == "simulated":
        # Never fall back to anything silently: a simulated backend needs its object.
        return None, "gpu_backend is 'simulated' but no simulated NVML object was given"
    try:
        import pynvml
    except ImportError as exc:
        return None, f"cannot import pynvml (nvidia-ml-py): {exc}"
    return pynvml, None


async def _guarded(name: str, missing: dict[str, str], collection: Awaitable[T]) -> T | None:
    # A bug or an unexpected error in one collector must not cost the whole checkpoint.
    try:
        return await collection
    except Exception as exc:
        log.exception("the %s collector failed", name)
        missing[name] = f"collector error: {type(exc).__name__}: {exc}"
        return None


def _unpack(
    name: str, result: tuple[T | None, str | None] | None, missing: dict[str, str]
) -> T | None:
    """Return a collector's value, recording in `missing` why it has none."""
    if result is None:
        return None
    value, reason = result
    if reason:
        missing[name] = reason
    return value
