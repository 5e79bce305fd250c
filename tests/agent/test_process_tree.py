"""The process collector on a real process tree, and its CPU arithmetic on a stand-in."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import psutil
import pytest

from agent.checkpoint import decode, encode
from agent.collectors.process import ProcessCollector

# The child says "ready" (on the inherited stdout) once its interpreter is up, so its
# memory has stopped growing before the test measures it.
PARENT_WITH_CHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', "
    "'import time; print(\\'ready\\', flush=True); time.sleep(30)']); "
    "time.sleep(30)"
)


@contextmanager
def _vllm_like_tree() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT_WITH_CHILD], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_it_measures_the_whole_process_tree() -> None:
    with _vllm_like_tree() as proc:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        tree_rss = sum(p.memory_info().rss for p in tree)
        collector = ProcessCollector(None, pid=proc.pid, port=None)
        first, reason = await collector.collect(time.monotonic(), time.time())
        second, _ = await collector.collect(time.monotonic(), time.time())

    assert reason is None and first is not None and second is not None
    assert (first.pid, first.children) == (proc.pid, 1)
    assert first.rss_bytes == pytest.approx(tree_rss, rel=0.2)  # both processes, summed
    assert first.threads is not None and first.threads >= 2
    assert first.open_fds is not None and first.open_fds >= 6
    assert first.uptime_s is not None and 0 <= first.uptime_s < 30
    assert first.cpu_pct is None  # needs two collections
    assert second.cpu_pct is not None and second.cpu_pct >= 0


async def test_it_says_when_the_process_is_gone() -> None:
    with _vllm_like_tree() as proc:
        collector = ProcessCollector(None, pid=proc.pid, port=None)
        assert (await collector.collect(time.monotonic(), time.time()))[0] is not None
    gone, reason = await collector.collect(time.monotonic(), time.time())

    assert gone is None and reason == f"vLLM process {proc.pid} is gone"


async def test_it_says_when_no_process_has_the_given_pid() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that existed a moment ago and is now free
    found, reason = await ProcessCollector(None, pid=proc.pid, port=None).collect(1.0, 1.0)
    assert found is None and reason == f"no process with pid {proc.pid}"


class _StandIn:
    """A psutil.Process-like object with scripted CPU times (the simulator's seam)."""

    def __init__(self, pid: int, cpu_s: float, children: list[_StandIn] | None = None) -> None:
        self.pid, self.cpu_s, self._children = pid, cpu_s, children or []
        self.running = True

    @contextmanager
    def oneshot(self) -> Iterator[None]:
        yield

    def memory_info(self) -> SimpleNamespace:
        return SimpleNamespace(rss=1000 * self.pid)

    def cpu_times(self) -> SimpleNamespace:
        return SimpleNamespace(user=self.cpu_s * 0.75, system=self.cpu_s * 0.25)

    def num_fds(self) -> int:
        return 10

    def num_threads(self) -> int:
        return 4

    def create_time(self) -> float:
        return 1000.0

    def children(self, recursive: bool = False) -> list[_StandIn]:
        return list(self._children)

    def is_running(self) -> bool:
        return self.running


async def test_it_computes_tree_cpu_from_time_differences() -> None:
    engine = _StandIn(2, cpu_s=500.0)
    root = _StandIn(1, cpu_s=100.0, children=[engine])
    collector = ProcessCollector(root, pid=None, port=None)
    await collector.collect(10.0, 1010.0)
    root.cpu_s, engine.cpu_s = 100.5, 502.0  # 2.5 CPU-seconds in 2 s: 125 %
    proc, _ = await collector.collect(12.0, 1012.0)

    assert proc is not None
    assert proc.cpu_pct == pytest.approx(125.0)
    assert (proc.rss_bytes, proc.open_fds, proc.threads) == (3000, 20, 8)
    assert (proc.children, proc.uptime_s) == (1, 12.0)


async def test_it_counts_no_cpu_spike_for_a_child_found_late() -> None:
    root = _StandIn(1, cpu_s=100.0)
    collector = ProcessCollector(root, pid=None, port=None)
    await collector.collect(10.0, 1010.0)
    root._children = [_StandIn(7, cpu_s=9000.0)]  # hours of CPU before we saw it
    root.running = True
    collector._children_at = None  # as after CHILDREN_REFRESH_S
    root.cpu_s = 101.0
    proc, _ = await collector.collect(11.0, 1011.0)

    assert proc is not None and proc.cpu_pct == pytest.approx(100.0)


async def test_it_keeps_watching_a_given_process_that_stopped_and_came_back() -> None:
    root = _StandIn(1, cpu_s=1.0)
    collector = ProcessCollector(root, pid=None, port=None)
    root.running = False
    assert await collector.collect(1.0, 1.0) == (None, "vLLM process 1 is gone")
    root.running = True
    proc, reason = await collector.collect(2.0, 2.0)
    assert proc is not None and reason is None


class _Broken(_StandIn):
    def memory_info(self) -> SimpleNamespace:
        raise RuntimeError("procfs went away")


async def test_it_keeps_the_checkpoint_when_a_collector_breaks(fake_vllm, make_agent) -> None:  # type: ignore[no-untyped-def]
    cp = await make_agent(fake_vllm.url, process=_Broken(1, cpu_s=1.0)).collect()

    assert cp.process is None
    assert cp.missing == {"process": "collector error: RuntimeError: procfs went away"}
    assert decode(encode(cp)) == cp
    assert cp.vllm is not None and cp.vllm.requests_running == 96
