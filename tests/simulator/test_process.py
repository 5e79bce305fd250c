"""The simulated vLLM process tree answers like psutil, leaks when told, and dies for real."""

from __future__ import annotations

import psutil
import pytest

from simulator.catalog import MIB
from simulator.process import CurrentProcess, SimulatedProcess
from tests.simulator.support import make_sim, run_for, run_to_uptime, scenario_from


def test_it_offers_psutils_process_interface() -> None:
    sim = make_sim("healthy")
    run_to_uptime(sim, 60)
    api = sim.run.proc
    with api.oneshot():
        assert api.memory_info().rss > 1024**3
        assert api.cpu_times().user > 0 and api.cpu_times().system > 0
        assert api.num_fds() == 187 and api.num_threads() > 10
        assert api.create_time() == sim.epoch  # started with the simulation
    (core,) = api.children(recursive=True)
    assert core.name() == "VLLM::EngineCore" and core.is_running()


def test_it_raises_no_such_process_once_exited() -> None:
    proc = SimulatedProcess(4242, "vllm", 0.0, 1024, 10, 5)
    proc.running = False
    assert not proc.is_running()
    with pytest.raises(psutil.NoSuchProcess):
        proc.memory_info()


def test_it_follows_the_current_process_through_a_restart() -> None:
    sim = make_sim("healthy")
    handle = CurrentProcess(lambda: sim.run.proc)
    first = handle.pid
    sim.restart()
    assert handle.pid != first and handle.is_running()
    assert handle.children(recursive=True)[0].pid == sim.run.proc.kids[0].pid


def test_it_leaks_host_memory_and_file_descriptors() -> None:
    sim = make_sim(scenario_from({"effects": [
        {"kind": "host_memory_leak", "at_s": 10, "mib_per_s": 8.0},
        {"kind": "fd_leak", "at_s": 10, "per_s": 1.0},
    ]}))  # fmt: skip
    run_to_uptime(sim, 10)
    rss, fds = sim.run.proc.rss_bytes, sim.run.proc.num_fds()
    run_for(sim, 100)
    assert sim.run.proc.rss_bytes - rss == pytest.approx(800 * MIB, rel=0.01)
    assert sim.run.proc.num_fds() - fds == 100


def test_it_gives_every_tensor_parallel_rank_a_worker_on_its_gpu() -> None:
    sim = make_sim("nccl_hang")
    run_to_uptime(sim, 5)
    workers = sim.run.proc.kids[0].kids
    assert [w.name_ for w in workers] == [f"VLLM::Worker_TP{r}" for r in range(4)]
    assert [g.processes[0].pid for g in sim.gpus] == [w.pid for w in workers]
