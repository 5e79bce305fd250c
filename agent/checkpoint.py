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
    system              System  the machine around it: memory_total_bytes and
                                memory_available_bytes (RAM, or the agent's cgroup limit when
                                that is lower), disks [{path, total_bytes, used_bytes,
                                free_bytes}]: each watched filesystem once (/, /dev/shm, the
                                model cache by default), free_bytes as unprivileged users see it
    missing             dict[str, str]    collector name -> why it produced nothing
    mode                str     "supervise" (the agent runs vLLM) or "attach" (vLLM runs elsewhere)
    engine_args         dict    vLLM's engine arguments as the agent knows them (the command line
                                in supervise mode), by vLLM's names: {"max_num_seqs": 256, ...};
                                flags without a value are True
    startup             Startup the figures vLLM logs while starting: phase progress, model
                                weights, KV-cache memory and blocks, max concurrency, durations
    steps               Steps   per-step engine stats from the optional vLLM stat-logger plugin
    event_seq           int     id of the newest event the agent holds (see Events below)

Events. Transitions, errors, GPU events and validation reports are events: each has an `id`
from one counter per agent run (1, 2, ...). The agent keeps the recent ones, and a checkpoint
carries those newer than the `events_since` query parameter of the request (all it keeps
when absent), so an answer lost on the way is sent again on the next poll:
    transitions         list[Transition]        lifecycle changes: at, from_state, to_state, trigger
    errors              list[ErrorEvent]        classified errors (agent/exceptions.py), one per
                                                traceback; identical ones within a checkpoint
                                                interval are one event with a count
    gpu_events          list[GpuEvent]          XIDs, ECC, row remapping, fallen off the bus, ...
    validations         list[ValidationReport]  pre-startup validator reports

Version history:
    1  2026-11  first version.
    2  2026-11  events (transitions, gpu_events, validations, ids on errors), mode, engine_args,
                startup, steps, event_seq; GPU health fields (aggregate ECC, retired pages,
                remapped rows, lost). Version 1 payloads still decode: every addition has a default.
    3  2026-11  system: host memory and disks. Earlier payloads decode with system None.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from agent.lifecycle import LifecycleState

CHECKPOINT_VERSION = 3

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
    "finished_output_tokens",  # vllm:request_generation_tokens_sum
    "finished_output_requests",  # vllm:request_generation_tokens_count
    "http_requests_2xx",
    "http_requests_4xx",
    "http_requests_5xx",
)

# Keys of Vllm.latency: the request-latency histograms, by their short names.
LATENCY_KEYS = ("ttft", "itl", "tpot", "e2e", "queue", "prefill", "decode", "inference")

# ErrorEvent.category: what the exception monitor sorts every error into.
ERROR_CATEGORIES = (
    "cuda_oom",
    "kv_cache_exhausted",
    "nccl_error",
    "engine_dead",
    "worker_timeout_or_hang",
    "model_load_error",
    "config_error",
    "cuda_illegal_access_or_xid",
    "system_resource",  # fds, disk, shm, host RAM
    "network_or_port",
    "tokenizer_or_request_error",
    "other",
)

# GpuEvent.kind
GPU_EVENT_KINDS = (
    "xid",  # an XID from the NVML event set (or the kernel log)
    "ecc_sbe",  # single-bit ECC errors rose
    "ecc_dbe",  # double-bit (uncorrected) ECC errors rose
    "retired_pages_pending",
    "remapped_rows_pending",
    "remapped_rows_failure",
    "fallen_off_bus",
    "pcie_replays",  # the PCIe replay counter rose
    "thermal_throttle",  # hardware or software thermal slowdown began
    "power_throttle",
)

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
    ecc_corrected_aggregate: Count | None = None
    ecc_uncorrected_aggregate: Count | None = None
    retired_pages_sbe: Count | None = None  # pre-Ampere page retirement
    retired_pages_dbe: Count | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_corrected: Count | None = None  # Ampere and later: row remapping
    remapped_rows_uncorrected: Count | None = None
    remapped_rows_pending: bool | None = None  # a reset is needed to apply them
    remapped_rows_failure: bool | None = None  # remapping failed: the GPU needs replacing
    lost: bool = False  # fallen off the bus: NVML answers GPU_IS_LOST
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
class Disk:
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    total_bytes: NonNeg
    used_bytes: NonNeg
    free_bytes: NonNeg  # less than total - used where the filesystem reserves blocks for root

    @property
    def used_pct(self) -> float | None:
        """Return the share in use as `df` counts it: of what unprivileged users can have."""
        usable = self.used_bytes + self.free_bytes
        return 100.0 * self.used_bytes / usable if usable else None


@dataclass(kw_only=True, slots=True)
class System:
    memory_total_bytes: NonNeg | None = None
    memory_available_bytes: NonNeg | None = None
    disks: list[Disk] = field(default_factory=list)


@dataclass(kw_only=True, slots=True)
class ErrorEvent:
    category: str  # one of ERROR_CATEGORIES
    message: str  # the line that says what went wrong, e.g. "torch.OutOfMemoryError: CUDA out..."
    id: Count = 0
    count: Annotated[int, msgspec.Meta(ge=1)] = 1
    first_seen_at: EpochS | None = None
    last_seen_at: EpochS | None = None
    signature: str = ""  # same signature = the same error (numbers and addresses removed)
    traceback: str = ""  # the whole event as logged (bounded), for the incident page
    fields: dict[str, Any] = field(default_factory=dict)  # extracted: gpu, xid, requested_bytes...


@dataclass(kw_only=True, slots=True)
class Transition:
    id: Count
    at: EpochS
    from_state: LifecycleState
    to_state: LifecycleState
    trigger: str  # the log line or the metric condition that caused it


@dataclass(kw_only=True, slots=True)
class GpuEvent:
    id: Count
    at: EpochS
    gpu_index: int | None  # None when NVML cannot tell which GPU
    kind: str  # one of GPU_EVENT_KINDS
    severity: str  # "info", "warning", "critical"
    message: str
    xid: int | None = None
    action: str = ""  # what NVIDIA's catalog recommends, e.g. "reset the GPU"


@dataclass(kw_only=True, slots=True)
class ValidationCheck:
    name: str  # e.g. "gpu_free_memory"
    status: str  # "pass", "warn", "fail", "skip"
    message: str  # what was measured, in a sentence
    value: str = ""  # the measured value, e.g. "71.2 GiB free of 79.6 GiB"
    expected: str = ""  # what would pass, e.g. ">= 73.2 GiB (0.92 x total)"
    fix: str = ""  # a concrete fix, in words
    fix_action: str = ""  # an agent action that applies the fix, when one can
    fix_params: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True, slots=True)
class ValidationReport:
    id: Count
    at: EpochS
    trigger: str  # "startup", "on_demand"
    blocked: bool  # a failed check stopped vLLM from starting
    checks: list[ValidationCheck] = field(default_factory=list)

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return next((s for s in ("fail", "warn") if s in statuses), "pass")


@dataclass(kw_only=True, slots=True)
class Startup:
    phase: LifecycleState | None = None  # the startup phase vLLM is in, or None once serving
    progress_pct: Pct | None = None  # weight loading / CUDA-graph capture progress bars
    model_weights_gib: NonNeg | None = None  # "Model loading took X GiB memory"
    weights_load_s: NonNeg | None = None
    kv_cache_gib: NonNeg | None = None  # "Available KV cache memory: X GiB"
    kv_cache_tokens: Count | None = None  # "GPU KV cache size: N tokens"
    max_concurrency: NonNeg | None = None  # "Maximum concurrency for N tokens per request: Xx"
    max_concurrency_tokens: Count | None = None
    cuda_graph_gib: NonNeg | None = None  # "Graph capturing finished in S secs, took X GiB"
    cuda_graph_s: NonNeg | None = None
    init_engine_s: NonNeg | None = None  # "init engine (...) took X s"
    started_at: EpochS | None = None  # when this vLLM process started
    serving_at: EpochS | None = None  # "Application startup complete."
    vllm_version: str | None = None


@dataclass(kw_only=True, slots=True)
class Steps:
    """Per-step engine figures from the vLLM stat-logger plugin, over the checkpoint interval."""

    steps: Count = 0
    step_interval_max_s: NonNeg | None = None  # the longest gap between two engine steps
    tokens_per_step_mean: NonNeg | None = None
    preempted: Count = 0
    kv_cache_usage_pct_max: Pct | None = None
    running_max: Count | None = None
    waiting_max: Count | None = None


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
    system: System | None = None
    missing: dict[str, str] = field(default_factory=dict)
    mode: str = "attach"
    engine_args: dict[str, Any] = field(default_factory=dict)
    startup: Startup | None = None
    steps: Steps | None = None
    event_seq: Count = 0
    transitions: list[Transition] = field(default_factory=list)
    errors: list[ErrorEvent] = field(default_factory=list)
    gpu_events: list[GpuEvent] = field(default_factory=list)
    validations: list[ValidationReport] = field(default_factory=list)

    @property
    def gpu_memory_used_bytes(self) -> float | None:
        used = [g.memory_used_bytes for g in self.gpus if g.memory_used_bytes is not None]
        return sum(used) if used else None

    @property
    def gpu_memory_total_bytes(self) -> float | None:
        total = [g.memory_total_bytes for g in self.gpus if g.memory_total_bytes is not None]
        return sum(total) if total else None

    @property
    def fullest_gpu_memory(self) -> tuple[float, float] | None:
        """The used and total bytes of the GPU with the largest share of its memory in use:
        an OOM happens on one GPU, and on a host of eight the share of all of them together
        is 56 % when one is full and the others half full."""
        known = [
            (g.memory_used_bytes, g.memory_total_bytes)
            for g in self.gpus
            if g.memory_used_bytes is not None and g.memory_total_bytes
        ]
        return max(known, key=lambda m: m[0] / m[1]) if known else None

    @property
    def gpu_memory_used_pct(self) -> float | None:
        """The fullest GPU's share of its memory in use (fullest_gpu_memory)."""
        fullest = self.fullest_gpu_memory
        return 100.0 * fullest[0] / fullest[1] if fullest else None


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
