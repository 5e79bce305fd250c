"""The simulated machine answers like psutil, and a filling disk kills the engine as in vLLM."""

from __future__ import annotations

from itertools import pairwise

import pytest

from simulator.catalog import GIB, MIB
from simulator.engine import Phase
from simulator.failures import ENGINE_DEAD
from simulator.history import simulate
from simulator.system import ROOT_DISK_BYTES, SimulatedSystem
from tests.simulator.support import (
    TICK_S,
    log_count,
    make_sim,
    run_for,
    run_to_uptime,
    run_until,
    scenario_from,
    serving,
)

ENOSPC = "OSError: [Errno 28] No space left on device"


def root_disk(checkpoint: dict) -> dict:
    (disk,) = [d for d in checkpoint["system"]["disks"] if d["path"] == "/"]
    return disk


def test_it_offers_psutils_memory_and_disk_interface() -> None:
    sim = make_sim("healthy")
    run_to_uptime(sim, 10)
    machine = SimulatedSystem(sim)
    memory = machine.virtual_memory()
    tree_rss = sum(int(p.rss_bytes) for p in sim.run.proc.walk())
    assert memory.total == 256 * GIB  # one GPU's share of an 8-GPU server's 2 TiB
    assert memory.total - memory.available == 24 * GIB + tree_rss + 96 * MIB
    assert memory.used + memory.free == memory.total
    for path in ("/", "/dev/shm"):
        disk = machine.disk_usage(path)
        assert disk.used + disk.free == disk.total and disk.free > 0
        assert disk.percent == round(100 * disk.used / disk.total, 1)
    assert machine.disk_usage("/").total == ROOT_DISK_BYTES
    assert machine.disk_usage("/dev/shm").total == memory.total // 2
    with pytest.raises(FileNotFoundError):
        machine.disk_usage("/data")


def test_it_sizes_the_ram_by_the_gpus() -> None:
    machine = SimulatedSystem(make_sim("nccl_hang"))  # 4 GPUs
    assert machine.virtual_memory().total == 1024 * GIB
    assert machine.disk_usage("/dev/shm").total == 512 * GIB


def test_it_shows_a_host_memory_leak_as_falling_available_memory() -> None:
    sim = make_sim("api_server_leak")  # the API server's RSS grows 8 MiB/s from 60 s
    machine = SimulatedSystem(sim)
    run_to_uptime(sim, 60)
    before, rss_before = machine.virtual_memory().available, sim.run.proc.rss_bytes
    run_to_uptime(sim, 180)
    fell = before - machine.virtual_memory().available
    assert fell == pytest.approx(sim.run.proc.rss_bytes - rss_before, abs=8)
    assert fell == pytest.approx(120 * 8 * MIB, rel=0.01)


def test_it_counts_shared_memory_against_the_ram_and_dies_when_it_is_full() -> None:
    sim = make_sim(scenario_from({
        "effects": [{"kind": "disk_fill", "at_s": 10, "mib_per_s": 4096.0, "path": "/dev/shm"}],
    }))  # fmt: skip
    machine = SimulatedSystem(sim)
    run_to_uptime(sim, 12)
    memory, shm, root = (
        machine.virtual_memory(),
        machine.disk_usage("/dev/shm"),
        machine.disk_usage("/"),
    )
    run_to_uptime(sim, 22)
    grew = machine.disk_usage("/dev/shm").used - shm.used
    assert grew == pytest.approx(10 * 4096 * MIB, rel=0.01)
    assert memory.available - machine.virtual_memory().available == grew  # tmpfs pages are RAM
    assert machine.disk_usage("/") == root  # the root disk is not the one filling
    run_until(sim, lambda s: s.phase is Phase.DEAD, 30)
    assert machine.disk_usage("/dev/shm").free == 0
    assert log_count(sim, ENOSPC) == 1


def test_it_fills_the_root_disk_into_enospc_then_exits_and_restarts_cleared() -> None:
    sim = make_sim("disk_fill")
    machine = SimulatedSystem(sim)
    run_to_uptime(sim, 29)
    assert machine.disk_usage("/").free == 60 * GIB
    run_to_uptime(sim, 90)
    written = 60 * GIB - machine.disk_usage("/").free
    assert written == pytest.approx(60 * 200 * MIB, abs=TICK_S * 200 * MIB)  # 60 s at 200 MiB/s
    run_until(sim, lambda s: s.phase is Phase.DEAD, 300)
    assert 330 < sim.run.uptime(sim.t) < 345  # 60 GiB at 200 MiB/s after 30 s
    assert machine.disk_usage("/").free == 0
    assert log_count(sim, "EngineCore encountered a fatal error.") == 1
    assert log_count(sim, ENOSPC) == 1 and log_count(sim, ENGINE_DEAD) == 1
    old_pid = sim.run.proc.pid
    run_until(sim, lambda s: s.phase is Phase.DOWN, 6)
    assert machine.disk_usage("/").free == 60 * GIB  # its scratch directory went with it
    run_until(sim, serving, 40)
    assert sim.run.proc.pid != old_pid
    run_for(sim, 20)
    assert machine.disk_usage("/").free == 60 * GIB  # the writing starts again at 30 s


def test_it_lets_the_agent_see_the_disk_fill_and_the_death_it_causes() -> None:
    run = simulate("disk_fill", 1, 420.0, vary=False)

    cps = run.checkpoints
    died = next(i for i, cp in enumerate(cps) if cp["lifecycle_state"].startswith("failed_"))
    assert cps[died]["lifecycle_state"] == "failed_system_resource"
    errors = {e["category"]: e["message"] for e in cps[died]["errors"]}
    assert errors["system_resource"].startswith(ENOSPC)
    assert root_disk(cps[died])["free_bytes"] == 0
    filling = [
        root_disk(cp)["used_bytes"]
        for cp in cps[:died]
        if cp["lifecycle_state"] == "serving" and root_disk(cp)["free_bytes"] < 60 * GIB
    ]
    assert len(filling) > 50  # every 5 s for over 4 minutes, 200 MiB/s each time
    assert all(b - a == pytest.approx(1000 * MIB, rel=0.01) for a, b in pairwise(filling))
    back = next(cp for cp in cps[died:] if cp["lifecycle_state"] == "serving")
    assert root_disk(back)["free_bytes"] == 60 * GIB  # the restart cleared it ...
    assert root_disk(cps[-1])["free_bytes"] < 60 * GIB  # ... and the writing came back
    (shm,) = [d for d in back["system"]["disks"] if d["path"] == "/dev/shm"]
    assert shm["total_bytes"] == back["system"]["memory_total_bytes"] / 2 == 128 * GIB
    (truth,) = run.truth
    assert truth.failure_type == "system_resource" and truth.ended_at is not None
