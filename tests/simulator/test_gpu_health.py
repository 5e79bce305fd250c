"""GPU health on the simulator: the collector, the XID watcher and GpuHealthDiff read what
SimulatedNvml's injections and the scenario effects put there, through pynvml's calls."""

from __future__ import annotations

from agent.collectors.gpu import GpuCollector
from simulator.nvml import SimulatedNvml, idle_gpu


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
