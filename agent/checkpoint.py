"""The checkpoint: one snapshot of one vLLM host at one time.

The agent builds it, serves it as JSON on `GET /v1/checkpoint`, and the control plane
validates it again on arrival with `decode()`. Both sides use these dataclasses, so the
format is written down exactly once.

Fields (all times are epoch seconds, floats; a `None` means "not measured"):

    version             int     CHECKPOINT_VERSION of the producer
    host                str     the host's name as the agent was configured
    seq                 int     checkpoints served since the agent started (1, 2, ...)
    agent_started_at    float   when the agent process started
    collected_at        float   when collection began, agent clock
    collect_duration_s  float   how long collection took
    lifecycle_state     str     a LifecycleState value (agent/lifecycle.py)
    lifecycle_detail    str     why the agent thinks so, e.g. "no tokens for 30 s with 12 running"
    vllm                Vllm    from the server's /metrics and /health; None when unreachable
      .url                        the server's base URL
      .health                     /health: ok, status_code, latency_s, error
      .model_name                 the `model_name` label
      .engines                    number of DP engines seen (`engine` label values)
      .requests_running           vllm:num_requests_running (summed over engines)
      .requests_waiting           vllm:num_requests_waiting
      .requests_waiting_capacity  ..._by_reason{reason="capacity"} (None before vLLM 2026-04)
      .requests_waiting_deferred  ..._by_reason{reason="deferred"}
      .kv_cache_usage_pct         vllm:kv_cache_usage_perc x 100 (max over engines), 0-100
      .sleep_state                "awake", "weights_offloaded", "discard_all" or None
      .cache                      from vllm:cache_config_info: blocks, block size, capacity
      .totals                     raw counter values, keys in TOTAL_KEYS
      .rates                      per-second rates between this scrape and the previous one
      .latency                    percentiles of the histograms' observations in that interval,
                                  keys in LATENCY_KEYS; a key is absent when nothing was observed
      .forward_progress           True when tokens advanced, False when requests are running
                                  and no token was generated since the previous scrape, None
                                  when it cannot be told (first scrape, counter reset)
      .restarted                  counters went backwards or the process start time changed
      .interval_s                 seconds since the previous scrape, None on the first
      .api_server                 process_* metrics of the API server process, when exposed
      .samples                    metric samples parsed from /metrics
    gpus                list[Gpu]   one per visible GPU (NVML); empty when GPU collection is off
      memory_*_bytes, utilization_*_pct (0-100), temperature_c, power_w / power_limit_w (W),
      sm_clock_mhz / mem_clock_mhz, throttle_reasons (names from THROTTLE_REASONS),
      ecc_*_volatile (counts since driver load), pcie_replay_count, processes (pid, bytes)
    gpu_backend         str     "nvml", "simulated" or "none": where `gpus` came from
    process             Process the vLLM process tree (psutil): rss_bytes (tree), cpu_pct
                                (tree, 100 = one core), open_fds, threads, children, uptime_s
    errors              list[ErrorEvent]  classified errors seen since the previous checkpoint,
                                deduplicated with a count
    missing             dict[str, str]    collector name -> why it produced nothing

Version history:
    1  2026-11  first version.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from agent.lifecycle import LifecycleState

CHECKPOINT_VERSION = 1

NonNeg = Annotated[float, msgspec.Meta(ge=0)]
Pct = Annotated[float, msgspec.Meta(ge=0, le=100)]
# Up to the year 2286: a larger value is a broken clock or a unit mistake (ms, ns).
EpochS = Annotated[float, msgspec.Meta(ge=0, le=10_000_000_000)]
Count = Annotated[int, msgspec.Meta(ge=0)]

# Keys of Vllm.totals: raw counter values as exposed (tokens, requests, preemptions, ...).
TOTAL_KEYS = (
    "prompt_tokens",
    "generation_tokens",
    "preemptions",
    "requests_finished",  # every finished_reason, aborts and errors included
    "requests_stop",
    "requests_length",
    "requests_abort",
    "requests_error",
    "requests_repetition",
    "prefix_cache_queries",
    "prefix_cache_hits",
    "engine_steps",  # vllm:iteration_tokens_total_count
    "http_requests_2xx",
    "http_requests_4xx",
    "http_requests_5xx",
)

# Keys of Vllm.latency: the request-latency histograms, by their short names.
LATENCY_KEYS = ("ttft", "itl", "tpot", "e2e", "queue", "prefill", "decode", "inference")

# NVML clock-event reasons (bit -> name), in the order of nvmlClocksEventReason*.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


class CheckpointError(ValueError):
    """A payload that is not a valid checkpoint; the message says what is wrong and where."""


@dataclass(kw_only=True, slots=True)
class Health:
    ok: bool
    status_code: int | None = None
    latency_s: NonNeg | None = None
    error: str | None = None


@dataclass(kw_only=True, slots=True)
class KvCacheInfo:
    num_gpu_blocks: Count | None = None
    block_size: Count | None = None
    kv_cache_size_tokens: Count | None = None
    max_concurrency: NonNeg | None = None
    gpu_memory_utilization: NonNeg | None = None
    cache_dtype: str | None = None


@dataclass(kw_only=True, slots=True)
class Rates:
    prompt_tokens_per_s: NonNeg | None = None
    generation_tokens_per_s: NonNeg | None = None
    preemptions_per_s: NonNeg | None = None
    requests_finished_per_s: NonNeg | None = None
    requests_failed_per_s: NonNeg | None = None  # finished with abort or error
    engine_steps_per_s: NonNeg | None = None
    http_4xx_per_s: NonNeg | None = None
    http_5xx_per_s: NonNeg | None = None
    prefix_cache_hit_pct: Pct | None = None


@dataclass(kw_only=True, slots=True)
class LatencySummary:
    count: Count
    mean_s: NonNeg
    p50_s: NonNeg
    p90_s: NonNeg
    p99_s: NonNeg


@dataclass(kw_only=True, slots=True)
class ApiServerProcess:
    rss_bytes: NonNeg | None = None
    cpu_s: NonNeg | None = None
    open_fds: Count | None = None
    max_fds: Count | None = None
    start_time: EpochS | None = None


@dataclass(kw_only=True, slots=True)
class Vllm:
    url: str
    health: Health
    model_name: str | None = None
    engines: Count = 0
    requests_running: NonNeg | None = None
    requests_waiting: NonNeg | None = None
    requests_waiting_capacity: NonNeg | None = None
    requests_waiting_deferred: NonNeg | None = None
    kv_cache_usage_pct: Pct | None = None
    sleep_state: str | None = None
    cache: KvCacheInfo = field(default_factory=KvCacheInfo)
    totals: dict[str, NonNeg] = field(default_factory=dict)
    rates: Rates = field(default_factory=Rates)
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    forward_progress: bool | None = None
    restarted: bool = False
    interval_s: NonNeg | None = None
    api_server: ApiServerProcess | None = None
    samples: Count = 0


@dataclass(kw_only=True, slots=True)
class GpuProcess:
    pid: Count
    used_memory_bytes: NonNeg | None = None
    name: str | None = None


@dataclass(kw_only=True, slots=True)
class Gpu:
    index: Count
    uuid: str | None = None
    name: str | None = None
    memory_used_bytes: NonNeg | None = None
    memory_total_bytes: NonNeg | None = None
    utilization_gpu_pct: Pct | None = None
    utilization_memory_pct: Pct | None = None
    temperature_c: float | None = None
    power_w: NonNeg | None = None
    power_limit_w: NonNeg | None = None
    sm_clock_mhz: NonNeg | None = None
    mem_clock_mhz: NonNeg | None = None
    throttle_reasons: list[str] = field(default_factory=list)
    ecc_corrected_volatile: Count | None = None
    ecc_uncorrected_volatile: Count | None = None
    pcie_replay_count: Count | None = None
    processes: list[GpuProcess] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # field -> NVML error

    @property
    def memory_used_pct(self) -> float | None:
        if self.memory_used_bytes is None or not self.memory_total_bytes:
            return None
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes


@dataclass(kw_only=True, slots=True)
class Process:
    pid: Count
    rss_bytes: NonNeg | None = None
    cpu_pct: NonNeg | None = None
    open_fds: Count | None = None
    threads: Count | None = None
    children: Count = 0
    uptime_s: NonNeg | None = None


@dataclass(kw_only=True, slots=True)
class ErrorEvent:
    category: str
    message: str
    count: Annotated[int, msgspec.Meta(ge=1)] = 1
    first_seen_at: EpochS | None = None
    last_seen_at: EpochS | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True, slots=True)
class Checkpoint:
    version: Annotated[int, msgspec.Meta(ge=1)]
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    seq: Count
    agent_started_at: EpochS
    collected_at: EpochS
    collect_duration_s: NonNeg = 0.0
    lifecycle_state: LifecycleState = LifecycleState.UNKNOWN
    lifecycle_detail: str = ""
    vllm: Vllm | None = None
    gpus: list[Gpu] = field(default_factory=list)
    gpu_backend: str = "none"
    process: Process | None = None
    errors: list[ErrorEvent] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def gpu_memory_used_bytes(self) -> float | None:
        used = [g.memory_used_bytes for g in self.gpus if g.memory_used_bytes is not None]
        return sum(used) if used else None

    @property
    def gpu_memory_total_bytes(self) -> float | None:
        total = [g.memory_total_bytes for g in self.gpus if g.memory_total_bytes is not None]
        return sum(total) if total else None

    @property
    def gpu_memory_used_pct(self) -> float | None:
        used, total = self.gpu_memory_used_bytes, self.gpu_memory_total_bytes
        return None if used is None or not total else 100.0 * used / total


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Checkpoint)


def encode(cp: Checkpoint) -> bytes:
    """Return the checkpoint as JSON bytes."""
    return _ENCODER.encode(cp)


def decode(data: bytes | str) -> Checkpoint:
    """Return the checkpoint in `data` (JSON), or raise CheckpointError saying what is wrong."""
    if isinstance(data, str):
        data = data.encode()
    _check_version(data)
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise CheckpointError(str(exc)) from None


def from_dict(payload: dict[str, Any]) -> Checkpoint:
    """Return the checkpoint in a decoded JSON dict (e.g. an exported one), validated."""
    if not isinstance(payload, dict):
        raise CheckpointError(f"Expected a JSON object, got {type(payload).__name__}")
    _check_version_value(payload.get("version"))
    try:
        return msgspec.convert(payload, Checkpoint)
    except msgspec.ValidationError as exc:
        raise CheckpointError(str(exc)) from None


def to_dict(cp: Checkpoint) -> dict[str, Any]:
    """Return the checkpoint as plain JSON-ready data (the documented format)."""
    result: dict[str, Any] = msgspec.to_builtins(cp)
    return result


def replace(cp: Checkpoint, **changes: Any) -> Checkpoint:
    return dataclasses.replace(cp, **changes)


def _check_version(data: bytes) -> None:
    try:
        head = msgspec.json.decode(data, type=_VersionOnly)
    except msgspec.DecodeError as exc:
        raise CheckpointError(str(exc)) from None
    _check_version_value(head.version)


def _check_version_value(version: Any) -> None:
    if isinstance(version, int) and not isinstance(version, bool) and version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint version {version} is newer than this side understands "
            f"({CHECKPOINT_VERSION}); upgrade Sentinel"
        )


class _VersionOnly(msgspec.Struct):
    version: Any = None
