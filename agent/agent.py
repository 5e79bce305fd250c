"""The agent: runs the collectors concurrently and assembles one Checkpoint per collection.

`collect()` never raises for a collector's failure: whatever a collector cannot produce is
named in `checkpoint.missing` (`vllm`, `vllm_metrics`, `gpu`, `process`) with the reason.
Concurrent calls share one collection in flight, so a burst of polls costs one scrape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from agent.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointError,
    Gpu,
    decode,
    encode,
    replace,
)
from agent.collectors.gpu import GpuCollector
from agent.collectors.lifecycle import LifecycleTracker
from agent.collectors.process import ProcessCollector
from agent.collectors.vllm import VllmCollector, VllmProbe
from agent.config import AgentConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


class Agent:
    def __init__(
        self, config: AgentConfig, *, nvml: Any | None = None, process_source: Any | None = None
    ) -> None:
        self.config = config
        self.started_at = time.time()
        self.seq = 0
        self._vllm = VllmCollector(config.vllm_url, timeout_s=config.scrape_timeout_s)
        self._gpu, self._gpu_unavailable = _gpu_collector(config.gpu_backend, nvml)
        self._process = ProcessCollector(process_source, pid=config.vllm_pid, port=config.vllm_port)
        self._lifecycle = LifecycleTracker(config.stall_after_s)
        self._in_flight: asyncio.Future[Checkpoint] | None = None

    async def collect(self) -> Checkpoint:
        """Return a fresh checkpoint; callers arriving during a collection share its result."""
        if self._in_flight is None:
            self._in_flight = asyncio.ensure_future(self._collect())
            self._in_flight.add_done_callback(self._collection_done)
        # shield: one caller giving up must not cancel the collection the others wait for.
        return await asyncio.shield(self._in_flight)

    async def close(self) -> None:
        await self._vllm.close()
        if self._gpu is not None:
            self._gpu.close()

    def _collection_done(self, future: asyncio.Future[Checkpoint]) -> None:
        if self._in_flight is future:
            self._in_flight = None

    async def _collect(self) -> Checkpoint:
        collected_at, started = time.time(), time.monotonic()
        missing: dict[str, str] = {}
        probe, gpus, process = await asyncio.gather(
            _guarded("vllm", missing, self._vllm.collect()),
            _guarded("gpu", missing, self._collect_gpus(started)),
            _guarded("process", missing, self._process.collect(started, collected_at)),
        )
        probe = probe or VllmProbe(vllm=None)
        missing.update(probe.missing)
        gpu_list = _unpack("gpu", gpus, missing) or []
        proc = _unpack("process", process, missing)
        state, detail = self._lifecycle.update(probe, proc.pid if proc else None, started)
        self.seq += 1
        return _validated(
            Checkpoint(
                version=CHECKPOINT_VERSION,
                host=self.config.host_name,
                seq=self.seq,
                agent_started_at=self.started_at,
                collected_at=collected_at,
                collect_duration_s=time.monotonic() - started,
                lifecycle_state=state,
                lifecycle_detail=detail,
                vllm=probe.vllm,
                gpus=gpu_list,
                gpu_backend=self.config.gpu_backend,
                process=proc,
                missing=missing,
            )
        )

    async def _collect_gpus(self, now: float) -> tuple[list[Gpu], str | None]:
        if self._gpu is None:
            return [], self._gpu_unavailable
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
    sections: dict[str, Any] = {"vllm": None, "gpus": [], "process": None}
    for name, empty in sections.items():
        try:
            decode(encode(replace(cp, **{n: e for n, e in sections.items() if n != name})))
        except CheckpointError as exc:
            cp = replace(cp, **{name: empty})
            cp.missing[name] = f"invalid: {exc}"
    return decode(encode(cp))


def _gpu_collector(backend: str, nvml: Any | None) -> tuple[GpuCollector | None, str | None]:
    """Return the GPU collector for `backend`, or None and why GPUs will be missing."""
    if backend == "none":
        return None, None
    if nvml is not None:
        return GpuCollector(nvml), None
    if backend == "simulated":
        # Never fall back to anything silently: a simulated backend needs its object.
        return None, "gpu_backend is 'simulated' but no simulated NVML object was given"
    try:
        import pynvml
    except ImportError as exc:
        return None, f"cannot import pynvml (nvidia-ml-py): {exc}"
    return GpuCollector(pynvml), None


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
