"""The machine's memory and disks, as the agent reads them (agent/collectors/system.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from agent.checkpoint import decode, encode
from agent.collectors import system
from agent.collectors.system import SystemCollector, cgroup_files, default_paths, within_cgroup
from tests.agent.conftest import make_config


async def test_it_reads_this_machines_memory_and_each_filesystem_once(tmp_path: Path) -> None:
    inner = tmp_path / "cache"
    inner.mkdir()
    found, reason = await SystemCollector(paths=[str(tmp_path), str(inner), "/no/such"]).collect()

    assert reason is None and found is not None
    # tmp_path and a directory inside it are one filesystem; a missing path is left out.
    assert [d.path for d in found.disks] == [str(tmp_path)]
    disk, usage = found.disks[0], shutil.disk_usage(tmp_path)
    assert disk.total_bytes == usage.total
    assert abs(disk.free_bytes - usage.free) < 0.05 * usage.total  # other writers meanwhile
    assert 0 < (found.memory_available_bytes or 0) <= (found.memory_total_bytes or 0)
    assert found.memory_total_bytes <= psutil.virtual_memory().total


async def test_a_path_made_later_is_watched_from_then_on(tmp_path: Path) -> None:
    later = tmp_path / "later"
    collector = SystemCollector(source=_Machine({str(later): 100}), paths=[str(later)])
    assert (await collector.collect())[0].disks == []  # type: ignore[union-attr]

    later.mkdir()
    found, _ = await collector.collect()
    assert found is not None and [d.used_bytes for d in found.disks] == [100.0]


async def test_a_hanging_filesystem_costs_its_readings_not_the_agent(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()
    calls = []

    def hanging(path: str) -> object:
        calls.append(path)
        release.wait(10)
        return shutil.disk_usage("/")

    monkeypatch.setattr(psutil, "disk_usage", hanging)
    monkeypatch.setattr(system, "READ_TIMEOUT_S", 0.05)
    collector = SystemCollector(paths=["/"])
    try:
        first = await collector.collect()
        second = await collector.collect()  # the first read still hangs: no second thread
        assert first == (None, "no answer in 0.05 s (a filesystem is not answering)")
        waiting = "still waiting for the previous read (a filesystem is not answering)"
        assert second == (None, waiting)
        assert calls == ["/"]
    finally:
        release.set()
    await asyncio.sleep(0.2)
    third, reason = await collector.collect()
    assert reason is None and third is not None and third.disks[0].path == "/"


def test_a_containers_memory_limit_is_its_total(tmp_path: Path) -> None:
    gib = 1024.0**3
    (tmp_path / "memory.max").write_text("8589934592\n")
    (tmp_path / "memory.current").write_text(str(int(6 * gib)))
    v2 = cgroup_files(tmp_path)
    assert v2 == (tmp_path / "memory.max", tmp_path / "memory.current")
    assert within_cgroup(64 * gib, 40 * gib, *v2) == (8 * gib, 2 * gib)
    (tmp_path / "memory.max").write_text("max\n")  # a limit changed while the agent runs
    assert within_cgroup(64 * gib, 40 * gib, *v2) == (64 * gib, 40 * gib)

    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")  # no limit
    (v1 / "memory" / "memory.usage_in_bytes").write_text("1")
    found = cgroup_files(v1)
    assert found is not None and within_cgroup(64 * gib, 40 * gib, *found) == (64 * gib, 40 * gib)
    assert cgroup_files(tmp_path / "none") is None


def test_the_default_paths_follow_the_caches_settings() -> None:
    env = {"HOME": "/home/u", "HF_HOME": "/models/hf"}
    assert default_paths(env) == ["/", "/dev/shm", "/models/hf", "/home/u/.cache/vllm", "/tmp"]


def test_bad_disk_paths_are_refused_with_the_reason() -> None:
    for bad in (["/", ""], "/data", ["/a\0b"]):
        with pytest.raises(ValueError, match="disk_paths must be a list of paths"):
            make_config("http://127.0.0.1:8000", disk_paths=bad)


async def test_the_checkpoint_carries_the_machine(fake_vllm) -> None:  # type: ignore[no-untyped-def]
    from agent.agent import Agent

    machine = _Machine({"/": 900, "/dev/shm": 10})
    agent = Agent(
        make_config(fake_vllm.url, disk_paths=["/", "/dev/shm"]),
        process_source=psutil.Process(os.getpid()),
        system_source=machine,
    )
    try:
        cp = await agent.collect()
    finally:
        await agent.close()

    assert cp.system is not None and decode(encode(cp)) == cp
    assert cp.system.memory_available_bytes == 3000.0
    assert [(d.path, d.used_bytes, d.free_bytes, d.used_pct) for d in cp.system.disks] == [
        ("/", 900.0, 100.0, 90.0),
        ("/dev/shm", 10.0, 990.0, 1.0),
    ]


class _Machine:
    """A psutil-like machine: 4000 bytes of RAM, disks of 1000 bytes with the given use."""

    def __init__(self, used: dict[str, int]) -> None:
        self.used = used

    def virtual_memory(self) -> SimpleNamespace:
        return SimpleNamespace(total=4000, available=3000)

    def disk_usage(self, path: str) -> SimpleNamespace:
        if path not in self.used or not os.path.exists(path):
            raise FileNotFoundError(path)
        return SimpleNamespace(total=1000, used=self.used[path], free=1000 - self.used[path])
