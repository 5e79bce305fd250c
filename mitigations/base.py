"""What a mitigation strategy is: what it applies to, how risky it is, what it asks the agent
to do, what it costs while it runs, and how to tell that it worked. Pure: checkpoints are the
documented JSON dicts (agent/checkpoint.py).

A strategy plans agent actions (agent/actions/: restart_with_args, drain, free_gpu_memory, ...);
it never acts itself. The control plane decides whether a plan runs (mitigations/gate.py),
sends its steps to the agent, then judges the outcome with `judge()` over the verification
window.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class Risk(StrEnum):
    LOW = "low"  # nothing is interrupted: reset the prefix cache, wake a spare replica
    MEDIUM = "medium"  # vLLM restarts with changed arguments after draining its requests
    HIGH = "high"  # in-flight requests may be dropped, or a host leaves the pool


class Outcome(StrEnum):
    SUCCESS = "success"
    NO_EFFECT = "no_effect"
    FAILURE = "failure"  # the action failed, or the predicted failure happened anyway
    MADE_WORSE = "made_worse"


class MitigationError(Exception):
    """The strategy cannot plan for this host now; `permanent` when it never will."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Step:
    """One agent action. `host` None means the host the incident is about."""

    action: str  # a name in agent.actions.REGISTRY
    params: dict[str, Any] = field(default_factory=dict)
    host: str | None = None


@dataclass(frozen=True, slots=True)
class Recovery:
    """A metric (learning.window.SERIES name) that must end on the right side of a bound."""

    metric: str
    op: str  # "<" or ">"
    bound: float

    def holds(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value < self.bound if self.op == "<" else value > self.bound

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass(frozen=True, slots=True)
class Verification:
    within_s: float  # how long after the last step the outcome is judged
    recover: tuple[Recovery, ...] = ()  # all must hold at the end of the window
    must_not_happen: tuple[str, ...] = ()  # failure types that must not begin in the window

    def describe(self) -> str:
        parts = [r.describe() for r in self.recover]
        parts += [f"no {f}" for f in self.must_not_happen]
        return f"within {self.within_s:.0f} s: " + (", ".join(parts) or "the host serves")


@dataclass(frozen=True, slots=True)
class Plan:
    strategy: str
    steps: tuple[Step, ...]
    params: dict[str, Any]  # the strategy's chosen figures, for the operator and the learner
    reason: str  # how they were chosen, in a sentence
    capacity_cost: float  # share of this host's serving capacity taken away while it runs
    duration_s: float  # how long it takes away that capacity, about
    verification: Verification


@dataclass(frozen=True, slots=True)
class Context:
    """What a strategy plans from: the newest checkpoint and the failure it answers."""

    checkpoint: dict[str, Any]
    failure_type: str
    spare_hosts: Sequence[dict[str, Any]] = ()  # {"host", "model", "state"} of idle replicas

    @property
    def vllm(self) -> dict[str, Any]:
        return self.checkpoint.get("vllm") or {}

    @property
    def engine_args(self) -> dict[str, Any]:
        return self.checkpoint.get("engine_args") or {}

    @property
    def state(self) -> str:
        return str(self.checkpoint.get("lifecycle_state") or "unknown")

    @property
    def model(self) -> str | None:
        return self.vllm.get("model_name")


SERVING_STATES = frozenset({"serving", "degraded"})
FAILED_STATES = frozenset(
    {"failed_cuda_oom", "failed_kv_cache_exhausted", "failed_nccl", "failed_hang",
     "failed_engine_dead", "failed_gpu_hardware", "failed_system_resource", "failed_config"}
)  # fmt: skip


class Mitigation(ABC):
    """One strategy. Copy a neighbour in mitigations/library/ to add one."""

    name: ClassVar[str]
    help: ClassVar[str]
    risk: ClassVar[Risk]
    failure_types: ClassVar[frozenset[str]]  # learning.prediction.FAILURE_TYPES it answers
    states: ClassVar[frozenset[str]] = SERVING_STATES  # lifecycle states it may run in

    def applies_to(self, ctx: Context) -> bool:
        return ctx.failure_type in self.failure_types and ctx.state in self.states

    @abstractmethod
    def plan(self, ctx: Context) -> Plan:
        """Return the steps and figures for this host now, or raise MitigationError."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "help": self.help,
            "risk": str(self.risk),
            "failure_types": sorted(self.failure_types),
            "states": sorted(self.states),
        }


def judge(
    verification: Verification,
    before: dict[str, float],
    after: Sequence[dict[str, float]],
    failures_seen: Sequence[str],
    executed: bool = True,
) -> Outcome:
    """Return the outcome of a plan from the metrics before it and after it ran.

    `before` and each of `after` map metric names to values (NaN when missing); `after` is the
    verification window, oldest first; `failures_seen` are the failure types that began in it.
    Made worse: a recovery metric moved the wrong way by more than a tenth of its bound.
    """
    if not executed:
        return Outcome.FAILURE
    if any(f in verification.must_not_happen for f in failures_seen):
        return Outcome.FAILURE
    if not verification.recover:
        return Outcome.SUCCESS if after else Outcome.NO_EFFECT
    last = after[-1] if after else {}
    values = [last.get(r.metric, math.nan) for r in verification.recover]
    if after and all(r.holds(v) for r, v in zip(verification.recover, values, strict=True)):
        return Outcome.SUCCESS
    for r, v in zip(verification.recover, values, strict=True):
        was = before.get(r.metric, math.nan)
        worse = v - was if r.op == "<" else was - v
        if not math.isnan(worse) and worse > 0.1 * abs(r.bound):
            return Outcome.MADE_WORSE
    return Outcome.NO_EFFECT


def engine_int(ctx: Context, name: str, default: int) -> int:
    """Return an integer engine argument from the checkpoint, or vLLM's default."""
    value = ctx.engine_args.get(name)
    try:
        return int(value) if value not in (None, True, False) else default
    except (TypeError, ValueError):
        return default


def engine_float(ctx: Context, name: str, default: float) -> float:
    value = ctx.engine_args.get(name)
    if value is None:
        value = (ctx.vllm.get("cache") or {}).get(name)
    try:
        return float(value) if value not in (None, True, False) else default
    except (TypeError, ValueError):
        return default


# ---------------------------------------------------------------- shared by the library

GIB = 1024.0**3
DRAIN_S = 60.0  # running requests get this long to finish before a restart
RESTART_S = 120.0  # a restart's time without serving, when the checkpoint says nothing
BIG_GPU_BYTES = 70 * GIB  # vLLM's serve defaults are larger on GPUs of 70 GiB or more

# What must be true after a strategy for each failure type, unless it says otherwise.
VERIFY: dict[str, Verification] = {
    "kv_cache_exhausted": Verification(
        300.0, (Recovery("preemptions_per_s", "<", 0.1),), ("kv_cache_exhausted",)
    ),
    "cuda_oom": Verification(300.0, (Recovery("health_ok", ">", 0.5),), ("cuda_oom",)),
    "thermal_throttling": Verification(
        300.0, (Recovery("gpu_throttled", "<", 0.5),), ("thermal_throttling",)
    ),
    "hang": Verification(300.0, (Recovery("forward_progress", ">", 0.5),), ("hang",)),
    "nccl_error": Verification(300.0, (Recovery("health_ok", ">", 0.5),), ("nccl_error",)),
    "engine_dead": Verification(300.0, (Recovery("health_ok", ">", 0.5),), ("engine_dead",)),
    "gpu_hardware": Verification(300.0, (), ("gpu_hardware",)),
    "system_resource": Verification(
        300.0, (Recovery("health_ok", ">", 0.5),), ("system_resource",)
    ),
    "performance_degradation": Verification(
        300.0, (Recovery("health_ok", ">", 0.5),), ("performance_degradation",)
    ),
}


def verification_for(ctx: Context) -> Verification:
    return VERIFY.get(ctx.failure_type, Verification(300.0, (Recovery("health_ok", ">", 0.5),)))


def big_gpus(ctx: Context) -> bool:
    totals = [g.get("memory_total_bytes") or 0 for g in ctx.checkpoint.get("gpus") or ()]
    return bool(totals) and min(totals) >= BIG_GPU_BYTES


def restart_s(ctx: Context) -> float:
    """Return how long a restart of this vLLM keeps it from serving, from its own startup."""
    startup = ctx.checkpoint.get("startup") or {}
    started, serving = startup.get("started_at"), startup.get("serving_at")
    if started and serving and serving > started:
        return float(serving - started)
    return RESTART_S


def restart_plan(
    ctx: Context,
    name: str,
    changes: dict[str, Any],
    reason: str,
    *,
    action: str = "restart_with_args",
    drain: bool = True,
) -> Plan:
    """Drain (so no request is dropped), then restart vLLM with `changes`."""
    steps = ((Step("drain", {"timeout_s": DRAIN_S}),) if drain else ()) + (
        Step(action, dict(changes)),
    )
    return Plan(
        strategy=name,
        steps=steps,
        params=dict(changes),
        reason=reason,
        capacity_cost=1.0,
        duration_s=(DRAIN_S if drain else 0.0) + restart_s(ctx),
        verification=verification_for(ctx),
    )
