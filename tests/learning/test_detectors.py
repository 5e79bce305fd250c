from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.checkpoint import to_dict
from agent.lifecycle import LifecycleState
from learning.detectors import (
    SLOWDOWN_C,
    Finding,
    detect,
    disk_exhaustion,
    fd_exhaustion,
    gpu_memory_leak,
    host_memory_exhaustion,
    host_memory_leak,
    kv_cache_exhaustion,
    performance_degradation,
    queue_growth,
    thermal,
)
from learning.window import Window, window
from simulator.fleet import FleetConfig, run_fleet
from tests.factories import GIB, make_checkpoint

T0 = 1_780_000_000.0
MIB = 1024**2
TOTAL = 80 * GIB

Patch = Callable[[dict[str, Any], int], None]


def host(n: int, step_s: float = 5.0, patch: Patch | None = None, **figures: Any) -> Window:
    """A window of `n` checkpoints every `step_s` from T0. Each figure is a make_checkpoint
    argument, constant or one value per checkpoint; `patch(cp_dict, i)` changes the rest."""
    cps = []
    for i in range(n):
        args = {k: v[i] if isinstance(v, list | np.ndarray) else v for k, v in figures.items()}
        args = {
            k: float(v) if isinstance(v, int | float | np.number) else v for k, v in args.items()
        }
        cp = to_dict(make_checkpoint(collected_at=T0 + i * step_s, **args))
        if patch is not None:
            patch(cp, i)
        cps.append(cp)
    return window(cps)


def now_of(w: Window) -> float:
    return float(w.t[-1])


# GPU memory ----------------------------------------------------------------------------------


def leaking(n: int, flat: int, mib_per_s: float, step_s: float = 5.0) -> np.ndarray:
    """GPU memory flat at vLLM's 92 % budget for `flat` checkpoints, then leaking."""
    t = np.arange(n) * step_s
    start = flat * step_s
    return 0.92 * TOTAL + np.maximum(t - start, 0.0) * mib_per_s * MIB


def test_it_finds_a_gpu_memory_leak_and_when_it_fills_the_gpu() -> None:
    used = leaking(60, flat=24, mib_per_s=5.0)
    w = host(60, gpu_memory_used_bytes=used)
    f = gpu_memory_leak(w, now_of(w))
    assert f is not None and f.what == "gpu_memory_leak" and f.failure_type == "cuda_oom"
    expected = (TOTAL - used[-1]) / (5 * MIB)
    assert f.time_to_exhaustion_s is not None
    assert abs(f.time_to_exhaustion_s - expected) < 0.05 * expected
    assert f.severity == "warning"  # ~19 min: within WARNING_S, not the horizon
    assert abs(f.figures["leak_mib_per_s"] - 5.0) < 0.1
    assert f.figures["budget_pct"] == 90.0  # the factory's checkpoint does not say: vLLM's default
    assert f.figures["above_budget_mib"] > 0


def test_it_calls_a_leak_critical_when_the_gpu_fills_within_the_horizon() -> None:
    w = host(60, gpu_memory_used_bytes=leaking(60, flat=10, mib_per_s=40.0))
    f = gpu_memory_leak(w, now_of(w))
    assert f is not None and f.severity == "critical"
    assert f.time_to_exhaustion_s is not None and f.time_to_exhaustion_s < 300


def test_it_stays_quiet_on_vllms_flat_preallocation_with_jitter() -> None:
    rng = np.random.default_rng(0)
    used = 0.92 * TOTAL + rng.normal(0, 4 * MIB, 120)
    w = host(120, gpu_memory_used_bytes=used)
    assert gpu_memory_leak(w, now_of(w)) is None


def test_it_does_not_call_a_one_off_step_a_leak() -> None:
    used = np.where(np.arange(80) < 40, 0.92 * TOTAL, 0.95 * TOTAL)
    w = host(80, gpu_memory_used_bytes=used)
    assert gpu_memory_leak(w, now_of(w)) is None


def test_it_tests_the_leaking_gpu_of_a_tensor_parallel_host() -> None:
    used = leaking(60, flat=20, mib_per_s=20.0)

    def four_gpus(cp: dict[str, Any], i: int) -> None:
        gpu = cp["gpus"][0]
        cp["gpus"] = [
            dict(copy.deepcopy(gpu), index=k, memory_used_bytes=0.92 * TOTAL) for k in range(4)
        ]
        cp["gpus"][2]["memory_used_bytes"] = float(used[i])

    w = host(60, patch=four_gpus)
    f = gpu_memory_leak(w, now_of(w))
    assert f is not None and f.figures["gpu_index"] == 2
    # The summed memory would say four times longer.
    expected = (TOTAL - used[-1]) / (20 * MIB)
    assert f.time_to_exhaustion_s is not None
    assert abs(f.time_to_exhaustion_s - expected) < 0.05 * expected


def test_it_does_not_carry_a_leak_across_a_restart() -> None:
    used = np.concatenate([leaking(40, flat=5, mib_per_s=40.0), np.full(20, 0.92 * TOTAL)])
    states = [LifecycleState.SERVING] * 40 + [LifecycleState.LOADING_WEIGHTS]
    states += [LifecycleState.SERVING] * 19
    w = host(60, gpu_memory_used_bytes=used, lifecycle_state=states)
    assert gpu_memory_leak(w, now_of(w)) is None
    before = host(40, gpu_memory_used_bytes=used[:40])
    assert gpu_memory_leak(before, now_of(before)) is not None


def test_it_reads_vllms_budget_from_the_checkpoint() -> None:
    def budget(cp: dict[str, Any], i: int) -> None:
        cp["vllm"]["cache"]["gpu_memory_utilization"] = 0.92

    w = host(60, gpu_memory_used_bytes=leaking(60, flat=20, mib_per_s=20.0), patch=budget)
    f = gpu_memory_leak(w, now_of(w))
    assert f is not None and f.figures["budget_pct"] == 92.0


# Host memory and file descriptors ------------------------------------------------------------


def process(
    rss: np.ndarray | None = None, fds: np.ndarray | None = None, max_fds: int = 0
) -> Patch:
    def patch(cp: dict[str, Any], i: int) -> None:
        cp["process"] = {
            "pid": 4242,
            "rss_bytes": float(rss[i]) if rss is not None else 6 * GIB,
            "open_fds": int(fds[i]) if fds is not None else 300,
            "children": 1,
        }
        if max_fds:
            cp["vllm"]["api_server"] = {"open_fds": 180, "max_fds": max_fds}

    return patch


def test_it_finds_a_host_memory_leak_and_the_time_to_a_given_limit() -> None:
    rng = np.random.default_rng(2)
    rss = 6 * GIB + 8 * MIB * 5 * np.arange(100) + rng.normal(0, 20 * MIB, 100)
    w = host(100, patch=process(rss=rss))
    found = host_memory_leak(w, now_of(w))
    assert found is not None and found.time_to_exhaustion_s is None and found.severity == "info"
    limited = host_memory_leak(w, now_of(w), limit_bytes=16 * GIB)
    assert limited is not None and limited.time_to_exhaustion_s is not None
    expected = (16 * GIB - rss[-1]) / (8 * MIB)
    assert abs(limited.time_to_exhaustion_s - expected) < 0.1 * expected
    assert abs(limited.figures["leak_mib_per_s"] - 8.0) < 0.5


def test_it_stays_quiet_on_noisy_flat_host_memory() -> None:
    rng = np.random.default_rng(4)
    w = host(120, patch=process(rss=6 * GIB + rng.normal(0, 50 * MIB, 120)))
    assert host_memory_leak(w, now_of(w), limit_bytes=16 * GIB) is None


def test_it_finds_file_descriptors_leaking_toward_the_limit() -> None:
    fds = 300 + np.arange(120)  # one more every 5 s
    w = host(120, patch=process(fds=fds, max_fds=1024))
    f = fd_exhaustion(w, now_of(w))
    assert f is not None and f.failure_type == "system_resource"
    assert f.figures["limit_fds"] == 1024
    assert f.time_to_exhaustion_s is not None
    assert abs(f.time_to_exhaustion_s - (1024 - 419) * 5.0) < 60
    assert f.severity == "info"  # about 50 min


def test_it_calls_file_descriptors_near_the_limit_critical_even_without_a_trend() -> None:
    w = host(30, patch=process(fds=np.full(30, 1000), max_fds=1024))
    f = fd_exhaustion(w, now_of(w))
    assert f is not None and f.severity == "critical"
    assert fd_exhaustion(w, now_of(w), fd_limit=65536) is None


def test_a_host_memory_leak_runs_out_when_the_machine_has_none_available() -> None:
    rss = 6 * GIB + 8 * MIB * 5 * np.arange(100)
    available = 14 * GIB - 8 * MIB * 5 * np.arange(100)  # the leak is what takes it

    def patch(cp: dict[str, Any], i: int) -> None:
        process(rss=rss)(cp, i)
        cp["system"] = {"memory_total_bytes": 64 * GIB, "memory_available_bytes": available[i]}

    w = host(100, patch=patch)
    found = host_memory_leak(w, now_of(w))
    assert found is not None and found.time_to_exhaustion_s is not None
    expected = available[-1] / (8 * MIB)  # about 20 minutes
    assert abs(found.time_to_exhaustion_s - expected) < 0.05 * expected
    assert (
        found.severity == "warning"
        and found.figures["limit_mib"] == (rss[-1] + available[-1]) / MIB
    )


def memory(available: np.ndarray | float, total: float = 256 * GIB) -> Patch:
    def patch(cp: dict[str, Any], i: int) -> None:
        value = float(available[i]) if isinstance(available, np.ndarray) else float(available)
        cp["system"] = {"memory_total_bytes": total, "memory_available_bytes": value}

    return patch


def test_memory_taken_by_others_runs_the_machine_out() -> None:
    rng = np.random.default_rng(8)
    # A co-located process takes 30 MiB/s; vLLM's own resident memory stays flat.
    available = 40 * GIB - 30 * MIB * 5 * np.arange(120) + rng.normal(0, 50 * MIB, 120)
    w = host(120, patch=memory(available))
    f = host_memory_exhaustion(w, now_of(w))
    assert f is not None and f.failure_type == "system_resource"
    expected = available[-1] / (30 * MIB)  # about 12 minutes
    assert f.time_to_exhaustion_s is not None
    assert abs(f.time_to_exhaustion_s - expected) < 0.1 * expected
    assert f.severity == "warning" and "falling 30" in f.summary
    assert f in detect(w, now_of(w))


def test_host_memory_steady_or_plenty_is_quiet_and_little_left_warns() -> None:
    rng = np.random.default_rng(9)
    w = host(120, patch=memory(100 * GIB + rng.normal(0, 2 * GIB, 120)))
    assert host_memory_exhaustion(w, now_of(w)) is None
    w = host(30, patch=memory(3 * GIB))  # of 256 GiB
    f = host_memory_exhaustion(w, now_of(w))
    assert f is not None and (f.severity, f.time_to_exhaustion_s) == ("warning", None)
    assert f.summary == "3.0 GiB of the machine's 256.0 GiB memory available, little left"
    assert host_memory_exhaustion(host(30, patch=memory(3 * GIB, total=32 * GIB)), T0) is None


def test_vllms_own_leak_is_named_once_not_twice() -> None:
    rss = 6 * GIB + 8 * MIB * 5 * np.arange(100)
    available = 14 * GIB - 8 * MIB * 5 * np.arange(100)

    def patch(cp: dict[str, Any], i: int) -> None:
        process(rss=rss)(cp, i)
        memory(available, total=64 * GIB)(cp, i)

    w = host(100, patch=patch)
    assert host_memory_exhaustion(w, now_of(w)) is not None  # on its own it sees the fall
    assert [f.what for f in detect(w, now_of(w))] == ["host_memory_leak"]


# Disks ---------------------------------------------------------------------------------------


def machine(**free_by_path: np.ndarray | float) -> Patch:
    """Disks of 1 TiB (64 MiB for /dev/shm) with the given free bytes, one value per checkpoint
    or constant."""

    def patch(cp: dict[str, Any], i: int) -> None:
        listed = []
        for name, free in free_by_path.items():
            path = "/" + name.replace("_", "/") if name != "root" else "/"
            total = 64 * MIB if path == "/dev/shm" else 1024 * GIB
            value = float(free[i]) if isinstance(free, np.ndarray) else float(free)
            listed.append({"path": path, "total_bytes": total, "used_bytes": total - value,
                           "free_bytes": value})  # fmt: skip
        cp["system"] = {"memory_total_bytes": 64 * GIB, "memory_available_bytes": 40 * GIB,
                        "disks": listed}  # fmt: skip

    return patch


def test_it_finds_a_disk_filling_and_the_time_until_it_is_full() -> None:
    rng = np.random.default_rng(3)
    free = 60 * GIB - 50 * MIB * 5 * np.arange(120) + rng.normal(0, 20 * MIB, 120)
    w = host(120, patch=machine(root=free, data=500 * GIB))
    f = disk_exhaustion(w, now_of(w))

    assert f is not None and (f.what, f.failure_type) == ("disk_exhaustion", "system_resource")
    expected = free[-1] / (50 * MIB)  # about 10 minutes
    assert f.time_to_exhaustion_s is not None
    assert abs(f.time_to_exhaustion_s - expected) < 0.1 * expected
    assert f.severity == "warning" and abs(f.figures["fill_mib_per_s"] - 50) < 3
    assert f.summary.startswith("/: ") and "filling" in f.summary
    assert f in detect(w, now_of(w))


def test_a_disk_filled_in_bursts_is_filling_too() -> None:
    # 2 GiB written once a minute (a training job's checkpoints, core dumps): a staircase.
    free = 100 * GIB - 2 * GIB * (np.arange(120) // 12)
    w = host(120, patch=machine(root=free))
    f = disk_exhaustion(w, now_of(w))
    assert f is not None and f.time_to_exhaustion_s is not None
    expected = free[-1] / (2 * GIB / 60)  # about 41 minutes at the staircase's mean rate
    assert abs(f.time_to_exhaustion_s - expected) < 0.15 * expected
    # One big write is a step, not a trend: nothing until the disk is nearly full.
    w = host(120, patch=machine(root=np.where(np.arange(120) < 60, 100 * GIB, 40 * GIB)))
    assert disk_exhaustion(w, now_of(w)) is None


def test_a_cache_emptied_again_or_a_disk_sitting_still_is_no_trend() -> None:
    rng = np.random.default_rng(5)
    # A cache filled by 200 MiB every 5 s and emptied every 100 s, emptied 20 s ago.
    sawtooth = 300 * GIB - 200 * MIB * (np.arange(125) % 20)
    still = 300 * GIB + rng.normal(0, 200 * MIB, 125)
    w = host(125, patch=machine(root=sawtooth, data=still))
    assert disk_exhaustion(w, now_of(w)) is None
    # Well into its next filling, it is filling: hours from full, a note and no warning.
    w = host(139, patch=machine(root=300 * GIB - 200 * MIB * (np.arange(139) % 20)))
    f = disk_exhaustion(w, now_of(w))
    assert f is not None and f.severity == "info"
    assert f.time_to_exhaustion_s is not None and f.time_to_exhaustion_s > 3600
    # A log line now and then: a slow, steady rise under MIN_DISK_FILL_BYTES in the hour.
    w = host(120, patch=machine(root=300 * GIB - 4096.0 * np.arange(120)))
    assert disk_exhaustion(w, now_of(w)) is None


def test_a_nearly_full_disk_warns_without_a_trend_and_a_full_one_is_critical() -> None:
    w = host(30, patch=machine(root=512 * MIB))
    f = disk_exhaustion(w, now_of(w))
    assert f is not None and f.severity == "warning" and f.time_to_exhaustion_s is None
    assert "nearly full" in f.summary

    w = host(30, patch=machine(root=0.0))
    f = disk_exhaustion(w, now_of(w))
    assert f is not None and (f.severity, f.time_to_exhaustion_s) == ("critical", 0.0)
    # 4 MiB free of a 64 MiB /dev/shm is small, not nearly full; 10 GiB of 1 TiB neither.
    w = host(30, patch=machine(dev_shm=4 * MIB, root=10 * GIB))
    assert disk_exhaustion(w, now_of(w)) is None


def test_the_disk_that_fills_first_is_the_one_reported() -> None:
    steps = 5 * np.arange(120)
    w = host(
        120, patch=machine(root=300 * GIB - 10 * MIB * steps, data=20 * GIB - 10 * MIB * steps)
    )
    f = disk_exhaustion(w, now_of(w))
    assert f is not None and f.summary.startswith("/data: ")


def test_malformed_disks_read_as_missing() -> None:
    def patch(cp: dict[str, Any], i: int) -> None:
        cp["system"] = [
            "not an object",
            {"disks": "none"},
            {"disks": [{"total_bytes": 1.0}, "x", {"path": "/", "free_bytes": "full"}]},
            {"disks": [{"path": "/", "free_bytes": 0.0, "total_bytes": None}]},
        ][i % 4]

    w = host(40, patch=patch)
    assert disk_exhaustion(w, now_of(w)) is None


# KV cache and queue --------------------------------------------------------------------------


def preempting(rates: list[float] | np.ndarray) -> Patch:
    def patch(cp: dict[str, Any], i: int) -> None:
        cp["vllm"]["rates"]["preemptions_per_s"] = float(rates[i])

    return patch


def test_it_warns_of_kv_cache_exhaustion_with_a_growing_queue() -> None:
    kv = np.minimum(60 + 0.8 * np.arange(24), 100)  # +0.16 %/s
    waiting = np.concatenate([np.zeros(10), np.arange(1, 15) * 2])
    w = host(24, kv_cache_usage_pct=kv, requests_waiting=waiting, requests_running=200)
    f = kv_cache_exhaustion(w, now_of(w))
    assert f is not None and f.failure_type == "kv_cache_exhausted"
    assert f.figures["queue_growing"] == 1.0
    expected = (100 - kv[-1]) / 0.16
    assert f.time_to_exhaustion_s is not None and abs(f.time_to_exhaustion_s - expected) < 30
    assert f.severity == "critical"


def test_it_calls_a_full_cache_with_preemptions_exhausted_now() -> None:
    rng = np.random.default_rng(1)
    kv = np.clip(99 + rng.normal(0, 0.5, 24), 0, 100)
    rates = np.where(np.arange(24) > 6, 1.5, 0.0)
    w = host(24, kv_cache_usage_pct=kv, requests_waiting=12, patch=preempting(rates))
    f = kv_cache_exhaustion(w, now_of(w))
    assert f is not None and f.severity == "critical" and f.time_to_exhaustion_s == 0.0
    assert f.figures["preempting"] == 1.0


def test_it_does_not_call_saturation_with_a_stable_cache_exhaustion() -> None:
    rng = np.random.default_rng(8)
    kv = np.clip(97 + rng.normal(0, 0.8, 24), 0, 100)
    waiting = 10 + rng.integers(-2, 3, 24)
    w = host(24, kv_cache_usage_pct=kv, requests_waiting=waiting, requests_running=250)
    assert kv_cache_exhaustion(w, now_of(w)) is None
    assert queue_growth(w, now_of(w)) is None


def test_a_rise_without_pressure_is_a_note_reported_further_ahead_when_it_has_lasted() -> None:
    # Load spikes lift the cache as fast and mostly stop short of full (measured with
    # evaluate/run): without a queue or preemptions a rise is a note, never a warning.
    kv = 20 + 1.0 * np.arange(48)  # +0.2 %/s for four minutes, 67 % now: full in ~165 s
    w = host(48, kv_cache_usage_pct=kv, requests_waiting=0)
    f = kv_cache_exhaustion(w, now_of(w))
    assert f is not None and f.severity == "info"
    # The same slope seen for two minutes only is not reported that far ahead.
    spike = host(24, kv_cache_usage_pct=44 + 1.0 * np.arange(24), requests_waiting=0)
    assert kv_cache_exhaustion(spike, now_of(spike)) is None
    soon = host(24, kv_cache_usage_pct=30 + 2.0 * np.arange(24), requests_waiting=0)
    f = kv_cache_exhaustion(soon, now_of(soon))
    assert f is not None and f.severity == "info"
    slow = host(24, kv_cache_usage_pct=20 + 0.5 * np.arange(24), requests_waiting=0)
    assert kv_cache_exhaustion(slow, now_of(slow)) is None  # +0.1 %/s at 31 %: a load swing


def test_it_finds_a_hang_in_a_queue_growing_behind_stuck_requests() -> None:
    def stalled(cp: dict[str, Any], i: int) -> None:
        cp["vllm"]["forward_progress"] = i < 6

    waiting = np.concatenate([np.ones(6), 1 + 6 * np.arange(1, 19)])
    w = host(24, requests_running=37, requests_waiting=waiting, patch=stalled)
    f = queue_growth(w, now_of(w))
    assert f is not None and f.failure_type == "hang" and f.severity == "critical"
    assert kv_cache_exhaustion(w, now_of(w)) is None  # a frozen cache is not filling up
    limited = queue_growth(w, now_of(w), waiting_limit=200)
    assert limited is not None and limited.time_to_exhaustion_s is not None
    assert abs(limited.time_to_exhaustion_s - (200 - waiting[-1]) / 1.2) < 15


def test_it_ignores_a_queue_that_grows_while_running_grows_too() -> None:
    waiting = np.arange(24) * 1.0
    w = host(24, requests_running=40 + 5 * np.arange(24), requests_waiting=waiting)
    assert queue_growth(w, now_of(w)) is None


# Temperature ---------------------------------------------------------------------------------


def test_it_does_not_extrapolate_a_gpu_warming_up_after_a_start() -> None:
    t = np.arange(36) * 5.0
    temps = np.round(58 - 26 * np.exp(-t / 50.0))
    w = host(36, gpu_temperature_c=temps)
    assert thermal(w, now_of(w)) is None


def test_it_does_not_extrapolate_a_warming_gpu_in_its_first_minute_either() -> None:
    # A simulated host's start, read at every checkpoint: 55 s in, its dozen whole-degree
    # readings fit a line to 87 C in two minutes, but their rise slows as the GPU warms.
    temps = [32, 35, 38, 40, 42, 43, 45, 47, 49, 50, 52, 53, 54, 55, 56, 57, 57, 58, 58, 59]
    w = host(len(temps), gpu_temperature_c=temps)
    assert all(thermal(w.upto(i), float(w.t[i])) is None for i in range(6, len(temps)))


def test_it_warns_when_a_rise_slows_toward_a_level_past_the_slowdown_point() -> None:
    # Cooling fails at 30 s on a warm GPU: it heads for 101 C, slowing as it goes, and
    # reaches 87 C at 170 s.
    t = np.arange(40) * 5.0
    temps = np.round(np.where(t < 30, 56, 101 - 45 * np.exp(-(t - 30) / 120.0)))
    w = host(40, gpu_temperature_c=temps)
    first = next(i for i in range(6, 40) if thermal(w.upto(i), float(w.t[i])) is not None)
    assert 170.0 - (w.t[first] - T0) >= 60.0


def test_it_warns_before_the_gpu_reaches_its_slowdown_temperature() -> None:
    temps = 57 + 0.3 * 5 * np.arange(16)  # +0.3 C/s: 79.5 C now, 87 C in 25 s
    w = host(16, gpu_temperature_c=temps)
    f = thermal(w, now_of(w))
    assert f is not None and f.severity == "critical" and f.failure_type == "thermal_throttling"
    assert f.time_to_exhaustion_s is not None and abs(f.time_to_exhaustion_s - 25) < 10
    hotter = thermal(w, now_of(w), slowdown_c=95.0)  # a GPU rated hotter
    assert hotter is not None and hotter.time_to_exhaustion_s is not None
    assert abs(hotter.time_to_exhaustion_s - (95 - 79.5) / 0.3) < 10


def heated(targets: np.ndarray, start_c: float, tau_s: float = 40.0) -> np.ndarray:
    """Whole-degree readings every 5 s of a die following `targets` with a first-order lag."""
    temps, temp = [], start_c
    for target in targets:
        temp += (target - temp) * (1 - math.exp(-5.0 / tau_s))
        temps.append(round(temp))
    return np.array(temps, dtype=float)


def ramp(flat: int, base: float, rise: float, ramp_s: float, after: int) -> np.ndarray:
    t = np.arange(flat + after) * 5.0
    return base + rise * np.clip((t - flat * 5.0) / ramp_s, 0.0, 1.0)


def warning_lead_s(temps: np.ndarray) -> float:
    """Seconds between the first warning and the first reading at the slowdown point."""
    at_slowdown = int(np.flatnonzero(temps >= SLOWDOWN_C)[0])
    w = host(at_slowdown, gpu_temperature_c=temps[:at_slowdown])
    first = next(
        i for i in range(6, at_slowdown)
        if (f := thermal(w.upto(i), float(w.t[i]))) is not None and f.severity != "info"
    )  # fmt: skip
    return 5.0 * (at_slowdown - first)


def test_it_warns_early_of_a_cooling_failure_after_minutes_of_steady_readings() -> None:
    # Four steady minutes, then the cooling fails over 90 s: 87 C 100 s later. A trend over
    # the five minutes read the first minute of the rise as noise (30 s of warning).
    temps = heated(ramp(48, 56.0, 45.0, 90.0, 40), start_c=56.0)
    assert warning_lead_s(temps) >= 45.0


def test_it_warns_early_when_the_cooling_fails_again_after_a_throttle() -> None:
    # Cooled from 86 C back to 57 C, then failing again: the rise alone is projected, not a
    # line through the cooling and the warming (which warned 15 s ahead).
    targets = np.concatenate([np.full(30, 56.0), ramp(0, 56.0, 45.0, 90.0, 40)])
    temps = heated(targets, start_c=86.0)
    assert warning_lead_s(temps) >= 45.0


def test_a_load_that_warms_the_gpu_a_few_degrees_is_no_warning() -> None:
    temps = heated(ramp(48, 56.0, 6.0, 40.0, 60), start_c=56.0)
    w = host(len(temps), gpu_temperature_c=temps)
    assert all(thermal(w.upto(i), float(w.t[i])) is None for i in range(6, len(temps)))


def test_a_rise_that_levels_off_far_below_the_slowdown_point_is_no_warning() -> None:
    # A simulated load spike's: its rate against its level is all but flat, which put the
    # level it heads for at 3e17 C and the slowdown point "0 s" away.
    temps = np.array(
        [60, 60, 59, 59, 59, 59, 58, 58, 57, 56, 56, 55, 55, 55, 55, 55, 55, 54, 54, 54, 54, 54,
         54, 54, 54, 54, 54, 54, 54, 53, 53, 53, 53, 54, 54, 54, 54, 54, 54, 54, 55, 55, 55, 55,
         56, 56, 56, 56, 57, 58, 58, 58, 59, 60, 60, 60, 60, 61, 61, 61, 61],
        dtype=float,
    )  # fmt: skip
    w = host(len(temps), gpu_temperature_c=temps)
    assert thermal(w, now_of(w)) is None


def test_it_reports_thermal_throttling_now() -> None:
    def throttled(cp: dict[str, Any], i: int) -> None:
        cp["gpus"][0]["throttle_reasons"] = ["sw_thermal_slowdown"] if i > 10 else []

    w = host(16, gpu_temperature_c=88, patch=throttled)
    f = thermal(w, now_of(w))
    assert f is not None and f.severity == "critical" and f.time_to_exhaustion_s == 0.0
    assert f.figures["throttled"] == 1.0


# Performance degradation ---------------------------------------------------------------------


def busy_host(n: int, slow_from: int, factor: float, seed: int = 0) -> Window:
    """ITL p99 grows with the running count; from `slow_from` it is `factor` times worse."""
    rng = np.random.default_rng(seed)
    running = rng.integers(20, 80, n)
    itl = (0.02 + 0.001 * running) * rng.lognormal(0, 0.1, n)
    itl[slow_from:] *= factor
    waiting = rng.integers(0, 3, n)
    return host(n, requests_running=running, requests_waiting=waiting, itl_p99_s=itl)


def test_it_finds_latency_worse_than_this_host_at_a_similar_load() -> None:
    w = busy_host(120, slow_from=108, factor=2.0)
    f = performance_degradation(w, now_of(w))
    assert f is not None and f.failure_type == "performance_degradation"
    assert 1.7 < f.figures["itl_p99_s_ratio"] < 2.3
    assert f.severity == "warning" and f.time_to_exhaustion_s is None


def test_it_stays_quiet_when_latency_matches_this_hosts_history() -> None:
    for seed in range(10):
        w = busy_host(120, slow_from=120, factor=1.0, seed=seed)
        assert performance_degradation(w, now_of(w)) is None


def test_it_does_not_compare_a_new_load_with_a_history_that_never_saw_it() -> None:
    running = np.concatenate([np.full(108, 30), np.full(12, 200)])
    itl = np.concatenate([np.full(108, 0.05), np.full(12, 0.2)])  # more load, slower: fine
    w = host(120, requests_running=running, itl_p99_s=itl)
    assert performance_degradation(w, now_of(w)) is None


# All of them ---------------------------------------------------------------------------------


def test_it_reads_a_window_built_from_a_few_series_without_checkpoints() -> None:
    t = T0 + 5.0 * np.arange(60)
    used = leaking(60, flat=20, mib_per_s=40.0)
    memory = {"gpu_mem_used_bytes": used, "gpu_mem_total_bytes": np.full(60, TOTAL)}
    w = Window(t, memory, ["serving"] * 60)
    found = detect(w, now_of(w))  # every other series is missing: NaN, not an error
    assert [f.what for f in found] == ["gpu_memory_leak"]
    assert detect(Window(np.zeros(0), {}, []), T0) == []


def test_it_lists_findings_most_urgent_first() -> None:
    def hot_and_full(cp: dict[str, Any], i: int) -> None:
        cp["gpus"][0]["throttle_reasons"] = ["hw_thermal_slowdown"]
        cp["process"] = {"pid": 1, "rss_bytes": 6 * GIB, "open_fds": 300 + i, "children": 0}

    used = leaking(60, flat=20, mib_per_s=20.0)
    w = host(60, gpu_memory_used_bytes=used, gpu_temperature_c=90, patch=hot_and_full)
    found = detect(w, now_of(w))
    assert [f.what for f in found] == ["thermal", "gpu_memory_leak", "fd_exhaustion"]
    assert all(isinstance(f, Finding) for f in found)
    assert found[0].evidence().source == "detector:thermal"


def test_it_finds_nothing_on_a_healthy_steady_host() -> None:
    rng = np.random.default_rng(11)
    n = 120
    w = host(
        n,
        kv_cache_usage_pct=np.clip(
            30 + 8 * np.sin(np.arange(n) / 15) + rng.normal(0, 2, n), 0, 100
        ),
        requests_running=np.round(60 + 15 * np.sin(np.arange(n) / 15)),
        requests_waiting=rng.integers(0, 4, n),
        gpu_temperature_c=np.round(61 + rng.normal(0, 0.7, n)),
        gpu_memory_used_bytes=0.92 * TOTAL + rng.normal(0, MIB, n),
    )
    assert detect(w, now_of(w)) == []


# On the simulator ----------------------------------------------------------------------------


async def simulate(scenario: str, seconds: float, step_s: float = 5.0) -> list[dict[str, Any]]:
    async with run_fleet(FleetConfig(hosts=1, seed=3, scenarios=[scenario], speed=0)) as fleet:
        agent = fleet.hosts[0].agent
        assert agent is not None
        checkpoints = []
        for _ in range(int(seconds / step_s)):
            await fleet.advance(step_s)
            checkpoints.append(to_dict(await agent.collect()))
        return checkpoints


def findings_over_time(cps: list[dict[str, Any]]) -> list[tuple[float, str, list[Finding]]]:
    out = []
    for end in range(10, len(cps) + 1):
        w = window(cps[max(0, end - 120) : end])
        out.append((now_of(w), w.states[-1], detect(w, now_of(w))))
    return out


def test_it_finds_the_simulated_gpu_leak_a_minute_before_the_oom() -> None:
    timeline = findings_over_time(asyncio.run(simulate("memory_leak_oom", 240)))
    oom_at = next(t for t, state, _ in timeline if state == "failed_cuda_oom")
    first = next(t for t, _, found in timeline if any(f.what == "gpu_memory_leak" for f in found))
    assert oom_at - first >= 60


def test_it_stays_quiet_on_the_simulated_healthy_host() -> None:
    timeline = findings_over_time(asyncio.run(simulate("healthy", 600)))
    loud = [(t, f.what) for t, _, found in timeline for f in found if f.severity != "info"]
    assert loud == []
