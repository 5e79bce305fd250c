"""GpuHealthDiff over plain Gpu readings, and the XID watcher against NVMLs that refuse it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pynvml

from agent import xid_catalog
from agent.checkpoint import Gpu
from agent.events import EventLog
from agent.gpu_health import (
    EVENT_DRAM_RETIREMENT_FAILURE,
    EVENT_GPU_RECOVERY_ACTION,
    EVENT_XID,
    GpuHealthDiff,
    XidWatcher,
    to_gpu_event,
)


def healthy(**changes: Any) -> Gpu:
    gpu = Gpu(
        index=0,
        uuid="GPU-0",
        temperature_c=71.0,
        power_w=690.0,
        ecc_corrected_volatile=3,
        ecc_uncorrected_volatile=0,
        ecc_corrected_aggregate=40,
        ecc_uncorrected_aggregate=1,  # an old DBE: part of the baseline, not news
        remapped_rows_pending=False,
        remapped_rows_failure=False,
        retired_pages_pending=None,  # an H100 has no page retirement
        pcie_replay_count=2,
    )
    return replace(gpu, **changes)


def kinds(events: list[Any]) -> list[str]:
    return [e.kind for e in events]


def test_it_takes_the_first_reading_as_the_baseline() -> None:
    log = EventLog()
    diff = GpuHealthDiff(log)
    worn = healthy(remapped_rows_pending=True, lost=False, throttle_reasons=["sw_power_cap"])

    assert diff.update([worn], now=100.0) == []
    assert diff.update([worn], now=110.0) == []
    assert log.last_id == 0


def test_it_reports_each_reading_that_got_worse() -> None:
    log = EventLog()
    diff = GpuHealthDiff(log)
    diff.update([healthy()], now=100.0)

    worse = healthy(
        ecc_corrected_aggregate=45,
        ecc_uncorrected_aggregate=2,
        remapped_rows_pending=True,
        remapped_rows_failure=True,
        pcie_replay_count=9,
        throttle_reasons=["hw_thermal_slowdown", "sw_power_cap"],
    )
    events = diff.update([worse], now=110.0)

    assert kinds(events) == [
        "ecc_sbe",
        "ecc_dbe",
        "pcie_replays",
        "remapped_rows_pending",
        "remapped_rows_failure",
        "thermal_throttle",
        "power_throttle",
    ]
    by_kind = {e.kind: e for e in events}
    assert by_kind["ecc_dbe"].severity == "critical"
    assert (
        by_kind["ecc_dbe"].message == "GPU 0: uncorrected (double-bit) ECC errors rose from 1 to 2"
    )
    assert by_kind["ecc_sbe"].severity == "info"  # five corrected errors: not alarming
    assert by_kind["remapped_rows_failure"].severity == "critical"
    assert by_kind["thermal_throttle"].severity == "critical"  # the hardware slowdown
    assert "71 C" in by_kind["thermal_throttle"].message
    assert [e.id for e in events] == list(range(1, 8))  # numbered by the EventLog
    assert log.since(0).gpu_events == events
    assert diff.update([worse], now=120.0) == []  # the same state is not news twice


def test_it_warns_when_corrected_errors_arrive_fast() -> None:
    diff = GpuHealthDiff(EventLog())
    diff.update([healthy()], now=0.0)

    (event,) = diff.update([healthy(ecc_corrected_aggregate=400)], now=10.0)

    assert (event.kind, event.severity) == ("ecc_sbe", "warning")


def test_it_reports_a_gpu_that_fell_off_the_bus_once_and_keeps_its_counters() -> None:
    diff = GpuHealthDiff(EventLog())
    diff.update([healthy()], now=0.0)
    lost = Gpu(index=0, uuid="GPU-0", lost=True, missing={"uuid": "GPU is lost"})

    (event,) = diff.update([lost], now=10.0)
    assert (event.kind, event.severity) == ("fallen_off_bus", "critical")
    assert "reboot" in event.action
    assert diff.update([lost], now=20.0) == []
    # Back after a reboot with the same counters: no ECC "rise" from the lost readings' None.
    assert kinds(diff.update([healthy(ecc_uncorrected_aggregate=2)], now=30.0)) == ["ecc_dbe"]


def test_it_takes_a_counter_that_went_down_as_a_new_baseline() -> None:
    diff = GpuHealthDiff(EventLog())
    diff.update([healthy(ecc_corrected_aggregate=None, ecc_corrected_volatile=50)], now=0.0)

    # The driver was reloaded: volatile counters restart from zero.
    assert diff.update([healthy(ecc_corrected_aggregate=None, ecc_corrected_volatile=0)], 1.0) == []
    events = diff.update([healthy(ecc_corrected_aggregate=None, ecc_corrected_volatile=2)], 2.0)
    assert [(e.kind, e.message) for e in events] == [
        ("ecc_sbe", "GPU 0: corrected (single-bit) ECC errors rose from 0 to 2")
    ]


def test_it_reports_one_power_throttling_episode_not_every_flicker() -> None:
    diff = GpuHealthDiff(EventLog())
    diff.update([healthy()], now=0.0)
    capped, free = healthy(throttle_reasons=["sw_power_cap"]), healthy()

    assert kinds(diff.update([capped], now=10.0)) == ["power_throttle"]
    diff.update([free], now=20.0)
    assert diff.update([capped], now=30.0) == []  # the same episode
    diff.update([free], now=400.0)
    assert kinds(diff.update([capped], now=410.0)) == ["power_throttle"]


def test_it_tells_gpus_apart_by_uuid() -> None:
    diff = GpuHealthDiff(EventLog())
    diff.update([healthy(), healthy(index=1, uuid="GPU-1")], now=0.0)

    events = diff.update([healthy(), healthy(index=1, uuid="GPU-1", pcie_replay_count=80)], 1.0)

    assert [(e.kind, e.gpu_index) for e in events] == [("pcie_replays", 1)]


def test_it_turns_nvml_events_into_gpu_events_with_the_catalogs_advice() -> None:
    xid = to_gpu_event(EVENT_XID, 79, 3, at=5.0)
    assert xid is not None
    assert (xid.kind, xid.xid, xid.gpu_index, xid.severity) == ("xid", 79, 3, "critical")
    assert xid.message == "Xid 79 on GPU 3: GPU has fallen off the bus " + (
        "(ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS)"
    )
    assert xid.action == xid_catalog.lookup(79).action

    recovery = to_gpu_event(EVENT_GPU_RECOVERY_ACTION, 2, 0, at=5.0)
    assert recovery is not None and (recovery.xid, recovery.severity) == (154, "critical")
    assert "node reboot required" in recovery.message

    failure = to_gpu_event(EVENT_DRAM_RETIREMENT_FAILURE, 0, None, at=5.0)
    assert failure is not None
    assert (failure.kind, failure.message) == (
        "remapped_rows_failure",
        "an unknown GPU: memory row retirement or remapping failed",
    )
    assert to_gpu_event(pynvml.nvmlEventTypePState, 0, 0, at=5.0) is None


class NoEventsNvml:
    """An NVML whose GPUs support no events, as in many VMs and containers."""

    NVMLError = pynvml.NVMLError

    def __init__(self, init_error: int | None = None) -> None:
        self.init_error = init_error
        self.shutdowns = 0
        self.freed = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return object()

    def nvmlDeviceGetSupportedEventTypes(self, handle: object) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlEventSetCreate(self) -> object:
        return object()

    def nvmlEventSetFree(self, event_set: object) -> None:
        self.freed += 1


async def test_it_reports_gpus_without_events_instead_of_failing() -> None:
    nvml = NoEventsNvml()
    watcher = XidWatcher(nvml, EventLog())

    watcher.start()
    watcher.stop()

    assert watcher.unsupported == {0: "Not Supported", 1: "Not Supported"}
    assert watcher.watching == {}
    assert watcher.missing_reason == "XID events unavailable: no GPU supports NVML events"
    assert (nvml.freed, nvml.shutdowns) == (1, 1)  # released at once: no thread to run


async def test_it_says_why_when_nvml_cannot_start_for_the_watcher() -> None:
    watcher = XidWatcher(NoEventsNvml(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND), EventLog())

    watcher.start()
    watcher.stop()

    assert watcher.missing_reason == "XID events unavailable: NVML Shared Library Not Found"


async def test_it_watches_real_pynvml_without_a_driver_and_says_so() -> None:
    # This machine has no GPU: the real bindings fail to load their library.
    watcher = XidWatcher(pynvml, EventLog())

    watcher.start()
    await asyncio.sleep(0)
    watcher.stop()

    assert watcher.missing_reason is not None
    assert watcher.missing_reason.startswith("XID events unavailable: ")
