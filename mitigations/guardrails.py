"""Guardrails: policies as data, checked on every checkpoint of a host. Pure.

A policy is a condition in the guardrail language (mitigations/expressions.py) over one
checkpoint and the host's open predictions, a time it must hold before it fires, a severity,
the failure type it guards against, and the strategies that answer it, best first. Admins edit
policies in the UI; the defaults below cover the seed's memory, performance and stability
guardrails and are loaded into the database once.

`Guardrails.check(host, checkpoint, predictions, now)` returns the policies that fire now: each
only once per episode (it fires after holding `hold_s`, and is armed again once the condition
has been false for `clear_s`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from learning.window import SERIES
from mitigations.expressions import Expression, ExpressionError, compile_condition, upper_limits

SEVERITIES = ("info", "warning", "critical")
EXTRA_NAMES = {
    "state": "the lifecycle state, e.g. 'serving', 'failed_cuda_oom'",
    "failed": "True when the lifecycle state is one of the failed ones",
    "ecc_uncorrected": "uncorrectable ECC errors since the driver loaded, all GPUs",
    "requests_total_per_s": "requests finished + failed per second",
}
NAMES = frozenset(SERIES) | frozenset(EXTRA_NAMES)


@dataclass(frozen=True)
class Policy:
    name: str
    condition: str
    failure_type: str
    interventions: tuple[str, ...]
    severity: str = "warning"
    hold_s: float = 30.0
    clear_s: float = 60.0
    enabled: bool = True
    description: str = ""
    compiled: Expression = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", compile_condition(self.condition, NAMES))


def check_policy(data: Mapping[str, Any]) -> list[str]:
    """Return what is wrong with a policy as an admin typed it (empty when it is fine)."""
    from learning.prediction import FAILURE_TYPES
    from mitigations.registry import STRATEGIES

    problems = []
    try:
        compile_condition(str(data.get("condition") or ""), NAMES)
    except ExpressionError as exc:
        problems.append(f"condition: {exc}")
    if data.get("failure_type") not in FAILURE_TYPES:
        problems.append(f"failure_type must be one of {', '.join(FAILURE_TYPES)}")
    if data.get("severity") not in SEVERITIES:
        problems.append(f"severity must be one of {', '.join(SEVERITIES)}")
    for key, default in (("hold_s", 30.0), ("clear_s", 60.0)):
        value = data.get(key, default)
        if not isinstance(value, int | float) or not 0 <= value <= 86_400:
            problems.append(f"{key} must be seconds between 0 and 86400")
    unknown = [s for s in data.get("interventions") or () if s not in STRATEGIES]
    if unknown:
        problems.append(f"unknown strategies: {', '.join(unknown)}")
    return problems


def environment(checkpoint: Mapping[str, Any], predictions: Sequence[Any] = ()) -> dict[str, Any]:
    """Return the names and functions a condition reads, from a checkpoint dict and the
    host's open predictions (anything with failure_type, probability, time_to_failure_s)."""
    env: dict[str, Any] = {}
    for name, get in SERIES.items():
        try:
            value = get(checkpoint)  # type: ignore[arg-type]
        except (TypeError, ValueError, AttributeError):
            value = None
        env[name] = math.nan if value is None else float(value)
    state = str(checkpoint.get("lifecycle_state") or "unknown")
    env["state"] = state
    env["failed"] = state.startswith("failed_")
    gpus = checkpoint.get("gpus") or ()
    env["ecc_uncorrected"] = float(sum(g.get("ecc_uncorrected_volatile") or 0 for g in gpus))
    env["requests_total_per_s"] = _nansum(
        env["requests_finished_per_s"], env["requests_failed_per_s"]
    )
    env["__functions__"] = _functions(checkpoint, predictions)
    return env


def figures(checkpoint: Mapping[str, Any]) -> dict[str, float]:
    """Every number a condition can read in a checkpoint, NaNs left out: the record of the
    metrics before and after a mitigation."""
    return {
        k: round(float(v), 4)
        for k, v in environment(checkpoint).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
    }


def _nansum(a: float, b: float) -> float:
    return (
        math.nan
        if math.isnan(a) and math.isnan(b)
        else (0 if math.isnan(a) else a) + (0 if math.isnan(b) else b)
    )


def _functions(checkpoint: Mapping[str, Any], predictions: Sequence[Any]) -> dict[str, Any]:
    by_type = {getattr(p, "failure_type", None): p for p in predictions}

    def p(failure_type: str) -> float:
        found = by_type.get(failure_type)
        return float(found.probability) if found is not None else 0.0

    def eta(failure_type: str) -> float:
        found = by_type.get(failure_type)
        ttf = getattr(found, "time_to_failure_s", None)
        return float(ttf) if ttf is not None else math.inf

    def gpu_events(kind_or_severity: str) -> float:
        return float(sum(
            1 for e in checkpoint.get("gpu_events") or ()
            if kind_or_severity in (e.get("kind"), e.get("severity"))
        ))  # fmt: skip

    def errors(category: str) -> float:
        return float(sum(
            e.get("count") or 1 for e in checkpoint.get("errors") or ()
            if e.get("category") == category
        ))  # fmt: skip

    return {"p": p, "eta": eta, "gpu_events": gpu_events, "errors": errors}


@dataclass(frozen=True, slots=True)
class Firing:
    policy: Policy
    host: str
    since: float  # when the condition began to hold
    at: float


@dataclass
class _Track:
    since: float | None = None  # the condition holds since
    false_since: float | None = None
    fired: bool = False


class Guardrails:
    """The policies and, per host and policy, how long each condition has held."""

    def __init__(self, policies: Iterable[Policy]) -> None:
        self.policies = [p for p in policies if p.enabled]
        self._tracks: dict[tuple[str, str], _Track] = {}

    def check(
        self,
        host: str,
        checkpoint: Mapping[str, Any],
        predictions: Sequence[Any],
        now: float,
    ) -> list[Firing]:
        env = environment(checkpoint, predictions)
        firing = []
        for policy in self.policies:
            track = self._tracks.setdefault((host, policy.name), _Track())
            if policy.compiled.evaluate(env):
                track.false_since = None
                track.since = now if track.since is None else track.since
                if not track.fired and now - track.since >= policy.hold_s:
                    track.fired = True
                    firing.append(Firing(policy, host, track.since, now))
            else:
                track.false_since = now if track.false_since is None else track.false_since
                if now - track.false_since >= policy.clear_s or not track.fired:
                    track.since, track.fired = None, False
        return firing

    @cached_property
    def limits(self) -> dict[str, dict[str, float]]:
        """Return, per figure, the lines the policies fire above: figure -> {"guardrail:NAME":
        value}, the lowest where one policy names a figure twice (forecasts say when each
        will be crossed)."""
        found: dict[str, dict[str, float]] = {}
        for policy in self.policies:
            for figure, value in upper_limits(policy.condition):
                key = f"guardrail:{policy.name}"
                mine = found.setdefault(figure, {})
                mine[key] = min(value, mine.get(key, math.inf))
        return found

    def adopt(self, older: Guardrails) -> None:
        """Carry over how long each condition has held from `older` (the policies changed)."""
        names = {p.name for p in self.policies}
        self._tracks.update({k: t for k, t in older._tracks.items() if k[1] in names})

    def holding(self, host: str) -> list[str]:
        """Return the names of the policies that have fired on `host` and not cleared."""
        return [name for (h, name), t in self._tracks.items() if h == host and t.fired]


# The seed's guardrails. vLLM takes gpu_memory_utilization (0.92) of each GPU from the start,
# so GPU memory "critical" is near the whole GPU, not at the seed's 95 %.
DEFAULT_POLICIES: tuple[dict[str, Any], ...] = (
    # memory
    {"name": "gpu_memory_critical", "condition": "gpu_mem_used_pct > 98.5",
     "failure_type": "cuda_oom", "severity": "critical", "hold_s": 15,
     "interventions": ["emergency_gpu_memory_cleanup", "lower_gpu_memory_utilization"],
     "description": "GPU memory all but full: the next allocation may fail"},
    {"name": "kv_cache_near_full",
     "condition": "kv_cache_usage_pct > 95 and (requests_waiting > 10 or preemptions_per_s > 0)",
     "failure_type": "kv_cache_exhausted", "severity": "warning", "hold_s": 30,
     "interventions": ["lower_max_num_seqs", "reset_prefix_cache", "scale_workers"],
     "description": "KV cache full and requests queue or get preempted"},
    {"name": "memory_leak_predicted", "condition": 'p("cuda_oom") >= 0.6',
     "failure_type": "cuda_oom", "severity": "critical", "hold_s": 0,
     "interventions": ["drain_and_restart", "lower_gpu_memory_utilization"],
     "description": "the predictor expects a CUDA OOM within its horizon"},
    # performance
    {"name": "high_latency", "condition": "itl_p99_s > 0.5 or ttft_p99_s > 20",
     "failure_type": "performance_degradation", "severity": "warning", "hold_s": 60,
     "interventions": ["reduce_batch_size", "scale_workers", "optimize_inference"],
     "description": "token latency p99 over 0.5 s or time to first token p99 over 20 s"},
    {"name": "low_throughput",
     "condition": "generation_tokens_per_s < 50 and requests_running > 10",
     "failure_type": "performance_degradation", "severity": "warning", "hold_s": 60,
     "interventions": ["optimize_inference", "drain_and_restart"],
     "description": "many requests running, few tokens coming out"},
    {"name": "gpu_underutilization", "condition": "gpu_util_pct < 20 and requests_waiting > 10",
     "failure_type": "performance_degradation", "severity": "info", "hold_s": 120,
     "interventions": ["optimize_inference"],
     "description": "requests wait while the GPU idles"},
    {"name": "request_queue_overflow", "condition": "requests_waiting > 200",
     "failure_type": "kv_cache_exhausted", "severity": "warning", "hold_s": 30,
     "interventions": ["scale_workers", "lower_max_num_seqs"],
     "description": "more than 200 requests waiting"},
    # stability
    {"name": "high_error_rate",
     "condition": "ratio(requests_failed_per_s, requests_total_per_s) > 0.05"
                  " or http_5xx_per_s > 1",
     "failure_type": "engine_dead", "severity": "critical", "hold_s": 30,
     "interventions": ["clear_errors", "drain_and_restart"],
     "description": "over 5 % of requests fail, or the API answers 5xx"},
    {"name": "worker_failure", "condition": "failed and state != 'failed_config'",
     "failure_type": "engine_dead", "severity": "critical", "hold_s": 0,
     "interventions": ["restart_failed_workers", "validate_and_fix_config"],
     "description": "vLLM is in a failed state"},
    {"name": "deadlock", "condition": "forward_progress == 0 and requests_running > 0",
     "failure_type": "hang", "severity": "critical", "hold_s": 30,
     "interventions": ["restart_failed_workers", "restart_nccl"],
     "description": "requests running and no token produced"},
    {"name": "gpu_overheating", "condition": "gpu_temp_c >= 85 or gpu_throttled > 0",
     "failure_type": "thermal_throttling", "severity": "warning", "hold_s": 30,
     "interventions": ["reduce_batch_size", "scale_workers", "drain_and_restart"],
     "description": "a GPU at 85 C or more, or its clocks cut for heat or power"},
    {"name": "gpu_hardware_error",
     "condition": 'gpu_events("critical") > 0 or ecc_uncorrected > 0',
     "failure_type": "gpu_hardware", "severity": "critical", "hold_s": 0,
     "interventions": ["drain_host"],
     "description": "a critical XID, an uncorrectable ECC error or a lost GPU"},
)  # fmt: skip


def default_policies() -> list[Policy]:
    return [Policy(**{**d, "interventions": tuple(d["interventions"])}) for d in DEFAULT_POLICIES]
