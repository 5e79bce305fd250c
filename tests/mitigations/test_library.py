"""The mitigation library: every strategy plans steps the agent accepts, from the checkpoint."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from agent.actions import REGISTRY as AGENT_ACTIONS
from agent.actions.base import validate
from agent.checkpoint import GpuProcess
from agent.lifecycle import LifecycleState
from learning.prediction import FAILURE_TYPES, RECOMMENDED_MITIGATIONS
from mitigations import registry
from mitigations.base import Context, MitigationError, Outcome, Recovery, Risk, Verification, judge
from tests.factories import GIB, make_checkpoint

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def cp(**changes: Any) -> dict[str, Any]:
    engine_args = changes.pop("engine_args", {"max_num_seqs": 256, "max_num_batched_tokens": 8192})
    return msgspec.to_builtins(make_checkpoint(engine_args=engine_args, **changes))


def test_every_recommended_mitigation_is_a_strategy() -> None:
    for failure_type, names in RECOMMENDED_MITIGATIONS.items():
        for name in names:
            assert name in registry.STRATEGIES, f"{failure_type} recommends unknown {name}"
            assert failure_type in registry.STRATEGIES[name].failure_types


@pytest.mark.parametrize("failure_type", FAILURE_TYPES)
@pytest.mark.parametrize("state", ["serving", "failed_cuda_oom", "failed_engine_dead"])
def test_every_plan_is_steps_the_agent_accepts(failure_type: str, state: str) -> None:
    checkpoint = cp(lifecycle_state=LifecycleState(state), requests_running=200.0)
    spare = [{"host": "gpu-09", "model": MODEL, "state": "sleeping"}]
    ctx = Context(checkpoint, failure_type, spare_hosts=spare)
    for plan in registry.candidates(ctx):
        strategy = registry.STRATEGIES[plan.strategy]
        assert strategy.applies_to(ctx)
        assert 0.0 <= plan.capacity_cost <= 1.0 and plan.duration_s > 0 and plan.reason
        assert plan.verification.within_s > 0
        for step in plan.steps:
            action = AGENT_ACTIONS[step.action]
            validate(action, step.params)  # raises ActionRefused on a bad parameter


def test_every_strategy_declares_what_the_issue_asks() -> None:
    assert len(registry.STRATEGIES) >= 18
    for strategy in registry.STRATEGIES.values():
        assert strategy.risk in Risk
        assert strategy.failure_types <= set(FAILURE_TYPES), strategy.name
        assert strategy.help and strategy.states


def test_lower_max_num_seqs_is_chosen_from_what_ran() -> None:
    ctx = Context(cp(requests_running=200.0), "kv_cache_exhausted")
    plan = registry.STRATEGIES["lower_max_num_seqs"].plan(ctx)
    assert plan.params == {"max_num_seqs": 150}
    assert [s.action for s in plan.steps] == ["drain", "restart_with_args"]
    assert plan.steps[1].params == {"max_num_seqs": 150}
    small = Context(cp(engine_args={"max_num_seqs": 8}, requests_running=8.0), "kv_cache_exhausted")
    with pytest.raises(MitigationError, match="already 8"):
        registry.STRATEGIES["lower_max_num_seqs"].plan(small)


def test_defaults_follow_the_gpu_size_when_the_arguments_are_unknown() -> None:
    big = Context(cp(engine_args={}), "cuda_oom")
    assert registry.STRATEGIES["lower_max_num_batched_tokens"].plan(big).params == {
        "max_num_batched_tokens": 4096
    }
    small = Context(
        cp(engine_args={}, gpu_memory_total_bytes=40 * GIB, gpu_memory_used_bytes=30 * GIB),
        "cuda_oom",
    )
    assert registry.STRATEGIES["lower_max_num_batched_tokens"].plan(small).params == {
        "max_num_batched_tokens": 1024
    }


def test_emergency_cleanup_needs_a_foreign_gpu_process() -> None:
    strategy = registry.STRATEGIES["emergency_gpu_memory_cleanup"]
    with pytest.raises(MitigationError, match="no GPU process"):
        strategy.plan(Context(cp(), "cuda_oom"))
    checkpoint = cp()
    checkpoint["gpus"][0]["processes"] = [
        msgspec.to_builtins(GpuProcess(pid=4242, used_memory_bytes=6 * GIB, name="python"))
    ]
    plan = strategy.plan(Context(checkpoint, "cuda_oom"))
    assert plan.steps[0].action == "free_gpu_memory" and plan.params == {"foreign_gib": 6.0}


def test_scale_workers_wakes_a_spare_replica_or_says_why_not() -> None:
    strategy = registry.STRATEGIES["scale_workers"]
    ctx = Context(cp(), "kv_cache_exhausted")
    with pytest.raises(MitigationError, match="no spare capacity"):
        strategy.plan(ctx)
    assert "no spare capacity" in registry.why_not(ctx)["scale_workers"]
    spare = [{"host": "gpu-07", "model": "other/model", "state": "sleeping"},
             {"host": "gpu-08", "model": MODEL, "state": "sleeping"}]  # fmt: skip
    plan = strategy.plan(Context(cp(), "kv_cache_exhausted", spare_hosts=spare))
    assert plan.steps[0].host == "gpu-08" and plan.steps[0].action == "wake_up"


def test_validate_and_fix_config_applies_the_validators_fix() -> None:
    checkpoint = cp(lifecycle_state=LifecycleState.FAILED_CONFIG)
    strategy = registry.STRATEGIES["validate_and_fix_config"]
    assert strategy.plan(Context(checkpoint, "engine_dead")).steps[0].action == "run_validator"
    check = {"name": "gpu_count", "status": "fail", "message": "2 GPUs, tp 4",
             "fix_action": "restart_with_args",
             "fix_params": {"tensor_parallel_size": 2}}  # fmt: skip
    checkpoint["validations"] = [
        {"id": 1, "at": 1.0, "trigger": "startup", "blocked": True, "checks": [check]}
    ]
    plan = strategy.plan(Context(checkpoint, "engine_dead"))
    assert [s.action for s in plan.steps] == [
        "restart_with_args"
    ]  # a failed host has nothing to drain
    assert plan.params == {"tensor_parallel_size": 2}


def test_restart_failed_workers_only_on_a_serving_host_that_hangs() -> None:
    strategy = registry.STRATEGIES["restart_failed_workers"]
    assert not strategy.applies_to(Context(cp(), "cuda_oom"))
    assert strategy.applies_to(Context(cp(), "hang"))
    dead = cp(lifecycle_state=LifecycleState.FAILED_ENGINE_DEAD)
    assert strategy.applies_to(Context(dead, "engine_dead"))
    assert strategy.risk is Risk.HIGH


VERIFY = Verification(300.0, (Recovery("preemptions_per_s", "<", 0.1),), ("kv_cache_exhausted",))


@pytest.mark.parametrize(
    ("after", "failures", "executed", "outcome"),
    [
        ([{"preemptions_per_s": 0.0}], [], True, Outcome.SUCCESS),
        ([{"preemptions_per_s": 2.0}], [], True, Outcome.NO_EFFECT),
        ([{"preemptions_per_s": 6.0}], [], True, Outcome.MADE_WORSE),
        ([{"preemptions_per_s": 0.0}], ["kv_cache_exhausted"], True, Outcome.FAILURE),
        ([{"preemptions_per_s": 0.0}], [], False, Outcome.FAILURE),
        ([], [], True, Outcome.NO_EFFECT),
    ],
)
def test_judge(
    after: list[dict[str, float]], failures: list[str], executed: bool, outcome: Outcome
) -> None:
    assert judge(VERIFY, {"preemptions_per_s": 2.0}, after, failures, executed) is outcome
