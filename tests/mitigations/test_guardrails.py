"""Guardrail policies over checkpoints: the defaults fire on what they name, once per episode."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from agent.lifecycle import LifecycleState
from learning.prediction import Prediction
from mitigations.guardrails import (
    DEFAULT_POLICIES,
    Guardrails,
    Policy,
    check_policy,
    default_policies,
    environment,
)
from tests.factories import GIB, make_checkpoint, with_gpus


def cp(**changes: Any) -> dict[str, Any]:
    return msgspec.to_builtins(make_checkpoint(**changes))


def fired(checkpoint: dict[str, Any], predictions: list[Prediction] | None = None) -> set[str]:
    rails = Guardrails(default_policies())
    names: set[str] = set()
    for t in range(0, 200, 5):
        names |= {f.policy.name for f in rails.check("h", checkpoint, predictions or [], float(t))}
    return names


def test_the_defaults_are_valid_and_cover_the_seed() -> None:
    for data in DEFAULT_POLICIES:
        assert check_policy(data) == [], data["name"]
    names = {d["name"] for d in DEFAULT_POLICIES}
    seed = {"gpu_memory_critical", "kv_cache_near_full", "memory_leak_predicted", "high_latency",
            "low_throughput", "gpu_underutilization", "request_queue_overflow", "high_error_rate",
            "worker_failure", "deadlock", "gpu_overheating", "gpu_hardware_error"}  # fmt: skip
    assert seed <= names


def test_a_healthy_busy_host_fires_nothing() -> None:
    assert fired(cp()) == set()


@pytest.mark.parametrize(
    ("changes", "policy"),
    [
        ({"gpu_memory_used_bytes": 79.5 * GIB}, "gpu_memory_critical"),
        ({"kv_cache_usage_pct": 99.0, "requests_waiting": 40.0}, "kv_cache_near_full"),
        ({"itl_p99_s": 0.9}, "high_latency"),
        ({"generation_tokens_per_s": 5.0}, "low_throughput"),
        ({"requests_waiting": 500.0}, "request_queue_overflow"),
        ({"gpu_temperature_c": 88.0}, "gpu_overheating"),
        ({"lifecycle_state": LifecycleState.FAILED_ENGINE_DEAD}, "worker_failure"),
    ],
)
def test_each_default_fires_on_what_it_names(changes: dict[str, Any], policy: str) -> None:
    assert policy in fired(cp(**changes))


def test_deadlock_and_hardware_and_predictions() -> None:
    stuck = cp()
    stuck["vllm"]["forward_progress"] = False
    assert "deadlock" in fired(stuck)
    xid = cp()
    xid["gpu_events"] = [{"id": 1, "at": 1.0, "gpu_index": 0, "kind": "xid", "severity": "critical",
                          "message": "Xid 79", "xid": 79}]  # fmt: skip
    assert "gpu_hardware_error" in fired(xid)
    oom = Prediction("cuda_oom", 0.8, 120.0, 0.9)
    assert "memory_leak_predicted" in fired(cp(), [oom])


def test_it_fires_after_the_hold_once_per_episode_and_rearms() -> None:
    policy = Policy("hot", "gpu_temp_c >= 85", "thermal_throttling", ("reduce_batch_size",),
                    hold_s=30, clear_s=60)  # fmt: skip
    rails = Guardrails([policy])
    hot, cool = cp(gpu_temperature_c=90.0), cp(gpu_temperature_c=60.0)
    times = [t for t in range(0, 30, 5) if rails.check("h", hot, [], float(t))]
    assert times == []  # 0..25 s: not held long enough
    assert [f.since for f in rails.check("h", hot, [], 30.0)] == [0.0]
    assert rails.check("h", hot, [], 35.0) == []  # once per episode
    assert rails.holding("h") == ["hot"]
    assert rails.check("h", cool, [], 40.0) == [] and rails.holding("h") == ["hot"]
    rails.check("h", cool, [], 100.0)  # false for 60 s: cleared
    assert rails.holding("h") == []
    assert rails.check("h", hot, [], 105.0) == []  # a new episode holds again first
    assert len(rails.check("h", hot, [], 135.0)) == 1
    assert rails.check("other", hot, [], 135.0) == []  # hosts are tracked apart


def test_an_admin_can_guard_the_machines_disks_and_memory() -> None:
    from agent.checkpoint import Disk, System

    policy = Policy("disk", "disk_min_free_pct < 5 or host_mem_available_bytes < 8589934592",
                    "system_resource", ("drain_and_restart",), hold_s=0)  # fmt: skip
    rails = Guardrails([policy])

    def machine(free_gib: float, available_gib: float) -> dict[str, Any]:
        root = Disk(path="/", total_bytes=1000 * GIB, used_bytes=0.0, free_bytes=free_gib * GIB)
        shm = Disk(path="/dev/shm", total_bytes=64 * GIB, used_bytes=0.0, free_bytes=60 * GIB)
        memory = {"memory_total_bytes": 256 * GIB, "memory_available_bytes": available_gib * GIB}
        return cp(system=System(**memory, disks=[root, shm]))

    assert rails.check("a", machine(free_gib=300, available_gib=100), [], 0.0) == []
    assert len(rails.check("b", machine(free_gib=40, available_gib=100), [], 0.0)) == 1  # 4 %
    assert len(rails.check("c", machine(free_gib=300, available_gib=4), [], 0.0)) == 1


def test_a_bad_policy_gets_every_problem_named() -> None:
    problems = check_policy({"condition": "kv_cache_usage > 3", "failure_type": "meltdown",
                             "severity": "loud", "hold_s": -1, "clear_s": 5,
                             "interventions": ["pray"]})  # fmt: skip
    text = "\n".join(problems)
    assert "unknown name 'kv_cache_usage'" in text and "kv_cache_usage_pct" in text
    assert "failure_type" in text and "severity" in text and "hold_s" in text
    assert "unknown strategies: pray" in text


def test_a_checkpoint_without_vllm_gives_nan_not_errors() -> None:
    env = environment(cp(vllm=False))
    assert env["kv_cache_usage_pct"] != env["kv_cache_usage_pct"]  # NaN
    assert fired(cp(vllm=False)) == set()


def test_it_lists_the_lines_its_policies_fire_above() -> None:
    rails = Guardrails([
        *default_policies(),
        Policy("queue_twice", "requests_waiting > 300 or requests_waiting >= 250", "hang", ()),
        Policy("off", "kv_cache_usage_pct > 50", "kv_cache_exhausted", (), enabled=False),
    ])  # fmt: skip

    limits = rails.limits

    assert limits["kv_cache_usage_pct"] == {"guardrail:kv_cache_near_full": 95.0}
    assert limits["gpu_mem_used_pct"] == {"guardrail:gpu_memory_critical": 98.5}
    assert limits["itl_p99_s"] == {"guardrail:high_latency": 0.5}
    assert limits["requests_waiting"]["guardrail:request_queue_overflow"] == 200.0
    assert limits["requests_waiting"]["guardrail:queue_twice"] == 250.0  # the lower line
    assert "guardrail:off" not in limits["kv_cache_usage_pct"]  # a disabled policy draws none


def test_gpu_memory_critical_fires_when_one_gpu_of_eight_is_full() -> None:
    # Together the eight GPUs are 56 % used; the full one is what runs out of memory.
    one_full = with_gpus(cp(), [79.5 * GIB] + [40 * GIB] * 7)
    assert "gpu_memory_critical" in fired(one_full)
    assert "gpu_memory_critical" not in fired(with_gpus(cp(), [70 * GIB] * 8))
