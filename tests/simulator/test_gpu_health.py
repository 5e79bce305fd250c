"""GPU health on the simulator: the collector, the XID watcher and GpuHealthDiff read what
SimulatedNvml's injections and the scenario effects put there, through pynvml's calls."""

from __future__ import annotations

import asyncio
import time

import pynvml
import pytest

from agent.checkpoint import GpuEvent
from agent.collectors.gpu import GpuCollector
from agent.events import EventLog
from agent.gpu_health import WATCHED_EVENTS, GpuHealthDiff, XidWatcher
from simulator.gpu import SUPPORTED_EVENTS
from simulator.nvml import SimulatedNvml, idle_gpu
from simulator.scenario import GPU_HEALTH_KINDS, ScenarioError, load_scenario, parse_scenario


def test_it_reads_every_health_injection_of_the_simulator() -> None:
    nvml = SimulatedNvml([idle_gpu(0), idle_gpu(1), idle_gpu(2)])
    nvml.gpus[0].ecc_corrected, nvml.gpus[0].ecc_uncorrected = 5.0, 1
    nvml.gpus[0].pcie_replays = 12.0
    nvml.apply_event("row_remap", {"gpu": 0, "corrected": 0, "uncorrected": 2,
                                   "pending": True, "failure": False})  # fmt: skip
    nvml.apply_event("retired_pages", {"gpu": 1, "sbe": 3, "dbe": 1, "pending": True})
    nvml.apply_event("gpu_lost", {"gpu": 2, "vanish": False})
    collector = GpuCollector(nvml)

    first, second, third = collector.collect(now=0.0)[0]

    assert (first.ecc_corrected_aggregate, first.ecc_uncorrected_aggregate) == (5, 1)
    assert (first.ecc_corrected_volatile, first.pcie_replay_count) == (5, 12)
    assert (first.remapped_rows_uncorrected, first.remapped_rows_pending) == (2, True)
    assert first.remapped_rows_failure is False and first.missing == {}
    assert (second.retired_pages_sbe, second.retired_pages_dbe) == (3, 1)
    assert second.retired_pages_pending is True
    assert third.lost is True and third.memory_used_bytes is None


def test_it_reports_a_simulated_gpu_that_vanished_under_its_last_uuid() -> None:
    nvml = SimulatedNvml([idle_gpu(0), idle_gpu(1)])
    collector = GpuCollector(nvml)
    before, _ = collector.collect(now=0.0)

    nvml.apply_event("gpu_lost", {"gpu": 0, "vanish": True})
    after, _ = collector.collect(now=1.0)

    assert [(g.uuid, g.lost) for g in after] == [(before[1].uuid, False), (before[0].uuid, True)]


async def wait_for_gpu_events(log: EventLog, count: int) -> list[GpuEvent]:
    """Return the first `count` GPU events once the watcher thread has handed them over."""
    for _ in range(200):
        events = log.since(0).gpu_events
        if len(events) >= count:
            return events
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(log.since(0).gpu_events)} of {count} GPU events arrived")


async def test_it_receives_injected_xids_through_the_event_set() -> None:
    nvml = SimulatedNvml([idle_gpu(0), idle_gpu(1)])
    log = EventLog()
    watcher = XidWatcher(nvml, log, wait_ms=50, clock=lambda: 1000.0)
    watcher.start()
    try:
        nvml.apply_event("xid", {"code": 48, "gpu": 1})
        nvml.apply_event("row_remap", {"gpu": 1, "corrected": 0, "uncorrected": 1,
                                       "pending": True, "failure": False})  # fmt: skip
        nvml.apply_event("xid", {"code": 4242, "gpu": 0})
        events = await wait_for_gpu_events(log, 3)
    finally:
        watcher.stop()

    expected_mask = WATCHED_EVENTS & SUPPORTED_EVENTS  # no P-state or clock events
    assert watcher.watching == {0: expected_mask, 1: expected_mask}
    assert watcher.missing_reason is None
    assert [(e.id, e.kind, e.gpu_index, e.xid, e.severity) for e in events] == [
        (1, "xid", 1, 48, "critical"),
        (2, "remapped_rows_pending", 1, None, "warning"),
        (3, "xid", 0, 4242, "warning"),  # not in the catalog: a cautious default
    ]
    assert events[0].at == 1000.0 and "Double Bit ECC Error" in events[0].message
    assert "dmesg" in events[2].action


async def test_it_watches_the_gpus_that_support_events_and_names_the_others() -> None:
    silent = idle_gpu(1)
    silent.supported_events = 0  # a vGPU without event support
    nvml = SimulatedNvml([idle_gpu(0), silent])
    log = EventLog()
    watcher = XidWatcher(nvml, log, wait_ms=50)
    watcher.start()
    try:
        nvml.apply_event("xid", {"code": 79, "gpu": 0})
        (event,) = await wait_for_gpu_events(log, 1)
    finally:
        watcher.stop()

    assert (event.xid, event.gpu_index) == (79, 0)
    assert watcher.unsupported == {1: "Not Supported"}
    assert watcher.missing_reason == "GPU 1: Not Supported"


async def test_it_stops_promptly_while_waiting_for_events() -> None:
    watcher = XidWatcher(SimulatedNvml(), EventLog(), wait_ms=50)
    watcher.start()
    started = time.monotonic()
    await asyncio.to_thread(watcher.stop)
    assert time.monotonic() - started < 1.0


def test_it_times_out_like_pynvml_when_no_event_arrives() -> None:
    nvml = SimulatedNvml()
    nvml.nvmlInit()
    event_set = nvml.nvmlEventSetCreate()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, event_set)
    nvml.inject_event(0, pynvml.nvmlEventTypePState, 0)  # not registered: never delivered

    with pytest.raises(pynvml.NVMLError_Timeout):
        nvml.nvmlEventSetWait_v2(event_set, 20)


def test_it_plays_the_xid_scenario_into_nvml_and_the_health_diff() -> None:
    scenario = load_scenario("xid_hardware_fault")
    nvml = SimulatedNvml()
    collector = GpuCollector(nvml)
    log = EventLog()
    diff = GpuHealthDiff(log)
    diff.update(collector.collect(now=0.0)[0], now=0.0)

    xids = []
    for event in scenario.events_between(0.0, 300.0):
        if event.kind in GPU_HEALTH_KINDS:
            nvml.apply_event(event.kind, event.params)
            xids += [event.params["code"]] if event.kind == "xid" else []
        elif event.kind == "ecc_uncorrected":  # what the engine does with this one
            nvml.gpus[0].ecc_uncorrected += event.params["uncorrected"]
    added = diff.update(collector.collect(now=1.0)[0], now=300.0)

    assert xids == [48, 63, 94, 154]
    assert [(e.kind, e.severity) for e in added] == [
        ("ecc_dbe", "critical"),
        ("remapped_rows_pending", "warning"),
    ]
    assert [e.kind for e in scenario.events] == [
        "ecc_uncorrected", "xid", "row_remap", "xid", "xid", "xid", "engine_death",
    ]  # fmt: skip


def test_it_rejects_an_xid_effect_without_a_number() -> None:
    with pytest.raises(ScenarioError, match="code must be a positive integer"):
        parse_scenario("bad", {"effects": [{"kind": "xid", "at_s": 1, "code": "48"}]})
