"""What the predictor says: predictions of failures and forecasts of metrics. Plain data.

A Prediction is one failure type for one host: how likely within the horizon, when, how
sure, why (the evidence), and which mitigations would help. A Forecast is one metric's
projected path with an uncertainty band and when it crosses each guardrail threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The failures Sentinel predicts. Each maps to what ends it in the state graph (the failed
# lifecycle states) or, for the ones that do not crash vLLM, to the condition that defines it.
FAILURE_TYPES = (
    "kv_cache_exhausted",  # KV cache full: preemption storm, queue growth (no crash)
    "cuda_oom",  # GPU memory exhausted: CUDA OOM kills the engine
    "thermal_throttling",  # GPU clocks cut for heat: throughput falls
    "hang",  # no forward progress with requests running (/health still 200)
    "nccl_error",  # a collective times out or fails (tensor parallelism)
    "engine_dead",  # the engine dies (any other cause)
    "gpu_hardware",  # XID / ECC / fallen off the bus
    "system_resource",  # host RAM, file descriptors, disk, shm
    "performance_degradation",  # latency or throughput worse than the host's own baseline
)

# The mitigation library's strategy names each failure type suggests, best first (the
# mitigations issue ranks them with what it learns).
RECOMMENDED_MITIGATIONS: dict[str, tuple[str, ...]] = {
    "kv_cache_exhausted": ("lower_max_num_seqs", "lower_max_num_batched_tokens",
                           "enable_kv_cache_fp8", "reset_prefix_cache", "scale_workers"),
    "cuda_oom": ("emergency_gpu_memory_cleanup", "lower_gpu_memory_utilization",
                 "lower_max_num_batched_tokens", "drain_and_restart"),
    "thermal_throttling": ("reduce_batch_size", "drain_and_restart", "scale_workers"),
    "hang": ("restart_failed_workers", "drain_and_restart"),
    "nccl_error": ("restart_nccl", "drain_and_restart"),
    "engine_dead": ("restart_failed_workers", "validate_and_fix_config"),
    "gpu_hardware": ("drain_host", "drain_and_restart"),
    "system_resource": ("clear_errors", "drain_and_restart"),
    "performance_degradation": ("optimize_inference", "reduce_batch_size", "scale_workers"),
}  # fmt: skip

DEFAULT_HORIZON_S = 300.0


@dataclass(frozen=True, slots=True)
class Evidence:
    source: str  # "detector:memory_leak", "forecast:kv_cache_usage_pct", "pattern:v3", ...
    detail: str  # a sentence an operator can read
    value: float | None = None


@dataclass(slots=True)
class Prediction:
    failure_type: str  # one of FAILURE_TYPES
    probability: float  # of the failure within the horizon, 0-1
    time_to_failure_s: float | None  # expected seconds from `now`; None when unknown
    confidence: float  # how much to trust `probability`, 0-1
    evidence: list[Evidence] = field(default_factory=list)
    recommended_mitigations: list[str] = field(default_factory=list)
    horizon_s: float = DEFAULT_HORIZON_S


@dataclass(slots=True)
class Forecast:
    metric: str  # a key of learning.window.SERIES, e.g. "kv_cache_usage_pct"
    times: list[float]  # epoch seconds, future
    values: list[float]
    lower: list[float]  # the uncertainty band (about 90 %)
    upper: list[float]
    crossings: dict[str, float | None] = field(default_factory=dict)  # threshold name -> epoch s
