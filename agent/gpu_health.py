"""GPU health events: XIDs as NVML delivers them, and worsening GPU readings between checkpoints.

`XidWatcher` waits on an NVML event set in a thread of its own (the wait blocks) and turns
every XID and health event into a GpuEvent, with the severity and action of NVIDIA's Xid
catalog (agent/xid_catalog.py). It never touches the EventLog from its thread: it hands each
event to the asyncio loop with `call_soon_threadsafe`, so the EventLog, like the rest of the
agent, is only ever used from the loop's thread and needs no lock.

`GpuHealthDiff` compares each checkpoint's GPUs with the previous ones and adds a GpuEvent
when something got worse: ECC errors, pending retired pages or row remaps, a remap failure,
a GPU off the bus, PCIe replays, thermal or power throttling. The first reading of a GPU
is its baseline, so an agent starting on a host with old errors does not report them all.

`nvml` is pynvml or anything with its names. The watcher uses nvmlInit, nvmlShutdown,
nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex, nvmlDeviceGetSupportedEventTypes,
nvmlEventSetCreate, nvmlDeviceRegisterEvents, nvmlEventSetWait_v2 (returns an object with
.eventType, .eventData, .device), nvmlEventSetFree and NVMLError.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import xid_catalog
from agent.checkpoint import Gpu, GpuEvent
from agent.events import EventLog

log = logging.getLogger(__name__)

WAIT_MS = 500  # the longest stop() waits for the watcher thread
ERROR_BACKOFF_S = 5.0  # after an unexpected wait error, so a broken set cannot spin
NVML_ERROR_TIMEOUT = 10  # an nvml.h return code: NVML's C ABI, the same in every binding

# nvmlEventType* bits (nvml.h, reference §8).
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID = 0x8
EVENT_SINGLE_BIT_ECC_STORM = 0x200
EVENT_DRAM_RETIREMENT = 0x400
EVENT_DRAM_RETIREMENT_FAILURE = 0x800
EVENT_NON_FATAL_POISON = 0x1000
EVENT_FATAL_POISON = 0x2000
EVENT_GPU_UNAVAILABLE = 0x4000
EVENT_GPU_RECOVERY_ACTION = 0x8000

# Health events other than XIDs: bit -> (GpuEvent kind, severity, message, action).
# Not watched: single-bit ECC errors (corrected, routine; GpuHealthDiff reports their counts
# rising) and the P-state, clock, power-source and MIG events (state changes, not faults).
HEALTH_EVENTS = {
    EVENT_DOUBLE_BIT_ECC: ("ecc_dbe", "critical", "double-bit (uncorrectable) ECC error",
                           xid_catalog.BUCKET_ACTION["WORKFLOW_XID_48"]),
    EVENT_SINGLE_BIT_ECC_STORM: ("ecc_sbe", "warning", "a storm of single-bit ECC errors",
                                 xid_catalog.NOTES[92]),
    EVENT_DRAM_RETIREMENT: ("remapped_rows_pending", "warning",
                            "memory row retired or remapped: a GPU reset applies it",
                            "reset the GPU when convenient"),
    EVENT_DRAM_RETIREMENT_FAILURE: ("remapped_rows_failure", "critical",
                                    "memory row retirement or remapping failed",
                                    xid_catalog.NOTES[64]),
    EVENT_NON_FATAL_POISON: ("ecc_dbe", "warning", "contained memory poison error",
                             xid_catalog.NOTES[94]),
    EVENT_FATAL_POISON: ("ecc_dbe", "critical", "uncontained memory poison error",
                         xid_catalog.NOTES[95]),
    EVENT_GPU_UNAVAILABLE: ("fallen_off_bus", "critical", "the GPU became unavailable",
                            xid_catalog.NOTES[79]),
}  # fmt: skip
WATCHED_EVENTS = functools.reduce(
    operator.or_, HEALTH_EVENTS, EVENT_XID | EVENT_GPU_RECOVERY_ACTION
)

# nvmlDeviceGpuRecoveryAction_t -> (words, severity).
RECOVERY_ACTIONS = {
    0: ("none", "info"),
    1: ("GPU reset required", "critical"),
    2: ("node reboot required", "critical"),
    3: ("drain peer-to-peer traffic", "warning"),
    4: ("drain and reset", "critical"),
}


class XidWatcher:
    """Watch every GPU's NVML event stream from a thread; GPUs without events are reported."""

    def __init__(
        self,
        nvml: Any,
        events: EventLog,
        *,
        wait_ms: int = WAIT_MS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nvml = nvml
        self._events = events
        self._wait_ms = wait_ms
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._set: Any = None
        self._indices: dict[int, int] = {}  # _handle_key(handle) -> GPU index
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._initialized = False
        self.watching: dict[int, int] = {}  # GPU index -> registered event mask
        self.unsupported: dict[int, str] = {}  # GPU index -> why it delivers no events
        self.error: str | None = None  # why nothing is watched at all

    @property
    def missing_reason(self) -> str | None:
        """Return why some or all XID events cannot arrive (for checkpoint.missing), or None."""
        if self.error is not None:
            return self.error
        if not self.unsupported:
            return None
        return "; ".join(f"GPU {i}: {why}" for i, why in sorted(self.unsupported.items()))

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Register every GPU and start the thread; events go to `loop` (default: the running
        one). Problems are recorded in `error` / `unsupported`, never raised."""
        self._loop = loop or asyncio.get_running_loop()
        self._stopping.clear()
        try:
            self._nvml.nvmlInit()
            self._initialized = True
            self._set = self._nvml.nvmlEventSetCreate()
            self._register_all()
        except self._nvml.NVMLError as exc:
            self.error = f"XID events unavailable: {_reason(exc)}"
        except OSError as exc:  # the NVML library itself is missing
            self.error = f"XID events unavailable: {exc}"
        if self.error is not None or not self.watching:
            self.error = self.error or "XID events unavailable: no GPU supports NVML events"
            log.warning("%s", self.error)
            self._release()
            return
        self._thread = threading.Thread(target=self._run, name="xid-watcher", daemon=True)
        self._thread.start()
        log.info("watching NVML events on GPUs %s", sorted(self.watching))

    def stop(self) -> None:
        """Stop the thread (within about `wait_ms`) and free the event set."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._release()

    def _register_all(self) -> None:
        for index in range(int(self._nvml.nvmlDeviceGetCount())):
            try:
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                supported = int(self._nvml.nvmlDeviceGetSupportedEventTypes(handle))
                mask = supported & WATCHED_EVENTS
                if not mask:
                    self.unsupported[index] = f"supports none of the health events ({supported:#x})"
                    continue
                self._nvml.nvmlDeviceRegisterEvents(handle, mask, self._set)
            except self._nvml.NVMLError as exc:
                # Common in VMs and containers; the other GPUs are still watched.
                self.unsupported[index] = _reason(exc)
                continue
            self.watching[index] = mask
            self._indices[_handle_key(handle)] = index

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self._nvml.nvmlEventSetWait_v2(self._set, self._wait_ms)
            except self._nvml.NVMLError as exc:
                if getattr(exc, "value", None) != NVML_ERROR_TIMEOUT:
                    log.warning("nvmlEventSetWait failed: %s", _reason(exc))
                    self._stopping.wait(ERROR_BACKOFF_S)
                continue
            event = self._gpu_event(data)
            if event is not None:
                self._deliver(event)

    def _gpu_event(self, data: Any) -> GpuEvent | None:
        index = self._indices.get(_handle_key(data.device))
        return to_gpu_event(int(data.eventType), int(data.eventData), index, self._clock())

    def _deliver(self, event: GpuEvent) -> None:
        loop = self._loop
        try:
            assert loop is not None
            loop.call_soon_threadsafe(self._events.add, event)
        except RuntimeError:  # the loop closed while we waited: the agent is stopping
            log.info("dropped a GPU event after the event loop closed: %s", event.message)

    def _release(self) -> None:
        if self._set is not None:
            try:
                self._nvml.nvmlEventSetFree(self._set)
            except self._nvml.NVMLError as exc:
                log.warning("nvmlEventSetFree failed: %s", _reason(exc))
            self._set = None
        if self._initialized:
            self._initialized = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                log.warning("nvmlShutdown failed: %s", _reason(exc))


def to_gpu_event(event_type: int, data: int, gpu_index: int | None, at: float) -> GpuEvent | None:
    """Return the GpuEvent for one NVML event (id 0: the EventLog numbers it), or None for an
    event type that is not a health event."""
    where = "an unknown GPU" if gpu_index is None else f"GPU {gpu_index}"
    if event_type & EVENT_XID:
        info = xid_catalog.lookup(data)
        message = f"Xid {data} on {where}: {info.description} ({info.mnemonic})"
        return GpuEvent(id=0, at=at, gpu_index=gpu_index, kind="xid", severity=info.severity,
                        message=message, xid=data, action=info.action)  # fmt: skip
    if event_type & EVENT_GPU_RECOVERY_ACTION:
        words, severity = RECOVERY_ACTIONS.get(data, (f"action {data}", "warning"))
        message = f"{where}: the driver's recovery action is now: {words}"
        return GpuEvent(id=0, at=at, gpu_index=gpu_index, kind="xid", severity=severity,
                        message=message, xid=154, action=xid_catalog.NOTES[154])  # fmt: skip
    for bit, (kind, severity, text, action) in HEALTH_EVENTS.items():
        if event_type & bit:
            return GpuEvent(id=0, at=at, gpu_index=gpu_index, kind=kind, severity=severity,
                            message=f"{where}: {text}", action=action)  # fmt: skip
    return None


# ---------------------------------------------------------------------------- GpuHealthDiff

SBE_WARNING_RISE = 10  # more new single-bit errors than this between checkpoints: a warning
THROTTLE_REPEAT_S = 300.0  # throttling that stops and starts again within this is one event
THERMAL_REASONS = {"sw_thermal_slowdown": "warning", "hw_thermal_slowdown": "critical"}
POWER_REASONS = {"sw_power_cap": "info", "hw_power_brake_slowdown": "warning"}


@dataclass(slots=True)
class _Baseline:
    """The last known value of every watched reading of one GPU (None: never read)."""

    counters: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (source, n)
    flags: dict[str, bool] = field(default_factory=dict)
    throttles: set[str] = field(default_factory=set)
    throttle_event_at: dict[str, float] = field(default_factory=dict)  # kind -> last event


class GpuHealthDiff:
    """Add a GpuEvent to `events` whenever a GPU's health got worse since the last checkpoint."""

    def __init__(self, events: EventLog) -> None:
        self._events = events
        self._baselines: dict[str, _Baseline] = {}  # GPU UUID (or index) -> last readings

    def update(self, gpus: list[Gpu], now: float) -> list[GpuEvent]:
        """Compare `gpus` (one checkpoint's) with the previous readings; return the events
        added to the EventLog, numbered."""
        added = []
        for gpu in gpus:
            key = gpu.uuid or f"index:{gpu.index}"
            baseline = self._baselines.get(key)
            if baseline is None:
                self._baselines[key] = _observe(_Baseline(), gpu)
                continue
            for event in _changes(baseline, gpu, now):
                added.append(self._events.add(event))
            _observe(baseline, gpu)
        return added


def _counters(gpu: Gpu) -> dict[str, tuple[str, int]]:
    """Return the counters to compare: the lifetime (aggregate) one when NVML gives it, else
    the one since driver load; the source is kept so that the two are never compared."""
    found = {}
    pairs = {
        "ecc_sbe": (("aggregate", gpu.ecc_corrected_aggregate),
                    ("volatile", gpu.ecc_corrected_volatile)),
        "ecc_dbe": (("aggregate", gpu.ecc_uncorrected_aggregate),
                    ("volatile", gpu.ecc_uncorrected_volatile)),
        "pcie_replays": (("counter", gpu.pcie_replay_count),),
    }  # fmt: skip
    for name, sources in pairs.items():
        known = next(((source, n) for source, n in sources if n is not None), None)
        if known is not None:
            found[name] = known
    return found


def _flags(gpu: Gpu) -> dict[str, bool]:
    flags = {
        "retired_pages_pending": gpu.retired_pages_pending,
        "remapped_rows_pending": gpu.remapped_rows_pending,
        "remapped_rows_failure": gpu.remapped_rows_failure,
        "fallen_off_bus": gpu.lost,
    }
    return {name: value for name, value in flags.items() if value is not None}


def _observe(baseline: _Baseline, gpu: Gpu) -> _Baseline:
    # A reading NVML did not give this time (a lost GPU gives none) keeps its last value.
    baseline.counters.update(_counters(gpu))
    baseline.flags.update(_flags(gpu))
    if not gpu.lost and "throttle_reasons" not in gpu.missing:
        baseline.throttles = set(gpu.throttle_reasons)
    return baseline


def _changes(baseline: _Baseline, gpu: Gpu, now: float) -> list[GpuEvent]:
    events = _counter_changes(baseline, gpu, now)
    events += _flag_changes(baseline, gpu, now)
    if not gpu.lost and "throttle_reasons" not in gpu.missing:
        events += _throttle_changes(baseline, gpu, now)
    return events


def _counter_changes(baseline: _Baseline, gpu: Gpu, now: float) -> list[GpuEvent]:
    events = []
    for name, (source, value) in _counters(gpu).items():
        before = baseline.counters.get(name)
        # A counter that went down was reset (driver reload): it is the new baseline.
        if before is None or before[0] != source or value <= before[1]:
            continue
        events.append(_counter_event(name, gpu, before[1], value, now))
    return events


def _counter_event(name: str, gpu: Gpu, before: int, after: int, now: float) -> GpuEvent:
    rise = f"rose from {before} to {after}"
    if name == "ecc_sbe":
        severity = "warning" if after - before > SBE_WARNING_RISE else "info"
        message = f"GPU {gpu.index}: corrected (single-bit) ECC errors {rise}"
        action = "none while it stays rare; a fast rise precedes row remapping (Xid 63) and DBEs"
    elif name == "ecc_dbe":
        severity = "critical"
        message = f"GPU {gpu.index}: uncorrected (double-bit) ECC errors {rise}"
        action = xid_catalog.BUCKET_ACTION["WORKFLOW_XID_48"]
    else:
        severity = "warning"
        message = f"GPU {gpu.index}: PCIe replays {rise}"
        action = "the PCIe link is retrying: check the slot, riser and cabling; watch for Xid 79"
    return GpuEvent(id=0, at=now, gpu_index=gpu.index, kind=name, severity=severity,
                    message=message, action=action)  # fmt: skip


# flag -> (severity, message, action) when it switches on.
_FLAG_EVENTS = {
    "retired_pages_pending": ("warning", "retired pages are pending",
                              "reboot the node or reset the GPU to retire them"),
    "remapped_rows_pending": ("warning", "remapped rows are pending",
                              "reset the GPU when convenient to apply the remap (Xid 63)"),
    "remapped_rows_failure": ("critical", "row remapping failed", xid_catalog.NOTES[64]),
    "fallen_off_bus": ("critical", "fell off the bus (NVML answers GPU_IS_LOST)",
                       xid_catalog.NOTES[79]),
}  # fmt: skip


def _flag_changes(baseline: _Baseline, gpu: Gpu, now: float) -> list[GpuEvent]:
    events = []
    for name, value in _flags(gpu).items():
        if value and not baseline.flags.get(name, False):
            severity, text, action = _FLAG_EVENTS[name]
            events.append(GpuEvent(id=0, at=now, gpu_index=gpu.index, kind=name,
                                   severity=severity, message=f"GPU {gpu.index}: {text}",
                                   action=action))  # fmt: skip
    return events


def _throttle_changes(baseline: _Baseline, gpu: Gpu, now: float) -> list[GpuEvent]:
    began = set(gpu.throttle_reasons) - baseline.throttles
    events = []
    for kind, reasons in (("thermal_throttle", THERMAL_REASONS), ("power_throttle", POWER_REASONS)):
        started = sorted(began & set(reasons))
        last = baseline.throttle_event_at.get(kind)
        # Power capping flickers on and off under full load: one event per episode.
        if not started or (last is not None and now - last < THROTTLE_REPEAT_S):
            continue
        baseline.throttle_event_at[kind] = now
        severity = max((reasons[r] for r in started), key=xid_catalog.SEVERITIES.index)
        events.append(_throttle_event(kind, started, severity, gpu, now))
    return events


def _throttle_event(kind: str, reasons: list[str], severity: str, gpu: Gpu, now: float) -> GpuEvent:
    where = f"GPU {gpu.index}"
    if kind == "thermal_throttle":
        detail = f" at {gpu.temperature_c:.0f} C" if gpu.temperature_c is not None else ""
        action = "check the cooling (fans, airflow, inlet temperature); clocks are lowered"
    else:
        detail = f" at {gpu.power_w:.0f} W" if gpu.power_w is not None else ""
        action = "expected at full load when brief; sustained, it lowers throughput"
    message = f"{where}: {kind.replace('_', ' ')} began ({', '.join(reasons)}){detail}"
    return GpuEvent(id=0, at=now, gpu_index=gpu.index, kind=kind, severity=severity,
                    message=message, action=action)  # fmt: skip


def _handle_key(handle: Any) -> int:
    # pynvml's handles are ctypes pointers: two pointer objects to one device compare unequal,
    # but the address they hold is the device's. Other handles (simulated) are compared by id.
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value or 0
    except (TypeError, ctypes.ArgumentError):
        return id(handle)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
