"""A window of one host's checkpoints as aligned numeric series, for every detector. Pure.

Checkpoints come as the documented JSON dicts (agent/checkpoint.py), oldest first, from any
source (the live table, an export, the simulator). A missing figure is NaN, never an error;
so is one that is not finite or beyond MAX_READING.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agent.checkpoint import ERROR_CATEGORIES

Getter = Callable[[dict[str, Any]], float | None]
# No figure of a vLLM host comes near this (an exabyte, 10^18 tokens): a reading beyond it is
# a broken exporter's, and is missing. Its square would overflow the detectors' sums.
MAX_READING = 1e18


def obj(value: Any) -> dict[str, Any]:
    """Return `value` if it is an object, else an empty one: a malformed part of a
    checkpoint reads as missing, as an absent one does."""
    return value if isinstance(value, dict) else {}


def _vllm(key: str) -> Getter:
    return lambda cp: obj(cp.get("vllm")).get(key)


def _rate(key: str) -> Getter:
    return lambda cp: obj(obj(cp.get("vllm")).get("rates")).get(key)


def _total(key: str) -> Getter:
    return lambda cp: obj(obj(cp.get("vllm")).get("totals")).get(key)


def _latency(name: str, stat: str) -> Getter:
    return lambda cp: obj(obj(obj(cp.get("vllm")).get("latency")).get(name)).get(stat)


def gpus(checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the checkpoint's GPUs, leaving out entries that are not objects."""
    return [g for g in _listed(checkpoint.get("gpus")) if isinstance(g, dict)]


def _gpus(key: str, combine: Callable[[list[float]], float]) -> Getter:
    def get(cp: dict[str, Any]) -> float | None:
        values = [v for g in gpus(cp) if not math.isnan(v := _num(g.get(key)))]
        return combine(values) if values else None

    return get


def _process(key: str) -> Getter:
    return lambda cp: obj(cp.get("process")).get(key)


def _min_free_pct(cp: dict[str, Any]) -> float | None:
    """Return the free share of the fullest watched filesystem (guardrails read it)."""
    _, free, total = disk_space(cp)
    shares = [100.0 * f / t for f, t in zip(free, total, strict=True) if t > 0 and f >= 0]
    return min(shares) if shares else None


def fullest_gpu(checkpoint: dict[str, Any]) -> tuple[float, float] | None:
    """Return the used and total memory (bytes) of the GPU with the largest share of its memory
    in use, or None without one. A CUDA OOM happens on one GPU: on a host of eight, the share
    of all of them together is 56 % when one is full and the others half full."""
    fullest = None
    for g in gpus(checkpoint):
        used, total = _num(g.get("memory_used_bytes")), _num(g.get("memory_total_bytes"))
        if (
            used >= 0
            and 0 < total < math.inf
            and (fullest is None or used * fullest[1] > fullest[0] * total)
        ):
            fullest = (used, total)
    return fullest


def _fullest(part: int) -> Getter:
    def get(cp: dict[str, Any]) -> float | None:
        found = fullest_gpu(cp)
        return None if found is None else found[part]

    return get


def _gpu_mem_pct(cp: dict[str, Any]) -> float | None:
    found = fullest_gpu(cp)
    return None if found is None else 100.0 * found[0] / found[1]


# NVML's clock-event reasons that slow a GPU down for heat or power (not idling or a setting).
SLOWDOWN_REASONS = frozenset(
    {"hw_thermal_slowdown", "sw_thermal_slowdown", "hw_slowdown", "hw_power_brake_slowdown"}
)


def _throttled(cp: dict[str, Any]) -> float | None:
    listed = gpus(cp)
    if not listed:
        return None
    reasons = (r for g in listed for r in _listed(g.get("throttle_reasons")))
    return float(any(isinstance(r, str) and r in SLOWDOWN_REASONS for r in reasons))


# name -> how to read it from a checkpoint dict. Units are in the names.
SERIES: dict[str, Getter] = {
    "gpu_count": lambda cp: float(len(gpus(cp))),
    "gpu_mem_used_bytes": _gpus("memory_used_bytes", sum),
    "gpu_mem_total_bytes": _gpus("memory_total_bytes", sum),
    # The fullest GPU's: what runs out first (fullest_gpu); the sums above are the host's.
    "gpu_mem_used_pct": _gpu_mem_pct,
    "gpu_mem_fullest_used_bytes": _fullest(0),
    "gpu_mem_fullest_total_bytes": _fullest(1),
    "gpu_util_pct": _gpus("utilization_gpu_pct", lambda v: sum(v) / len(v)),
    "gpu_temp_c": _gpus("temperature_c", max),
    "gpu_power_w": _gpus("power_w", lambda v: sum(v) / len(v)),  # a GPU's, on average
    "gpu_sm_clock_mhz": _gpus("sm_clock_mhz", min),
    "gpu_throttled": _throttled,
    "kv_cache_usage_pct": _vllm("kv_cache_usage_pct"),
    "requests_running": _vllm("requests_running"),
    "requests_waiting": _vllm("requests_waiting"),
    "prompt_tokens_per_s": _rate("prompt_tokens_per_s"),
    "generation_tokens_per_s": _rate("generation_tokens_per_s"),
    "preemptions_per_s": _rate("preemptions_per_s"),
    "requests_finished_per_s": _rate("requests_finished_per_s"),
    "requests_failed_per_s": _rate("requests_failed_per_s"),
    "http_5xx_per_s": _rate("http_5xx_per_s"),
    # Raw counters: a rate over any span is their difference (learning.detectors.kv_cache_demand).
    "generation_tokens_total": _total("generation_tokens"),
    "requests_finished_total": _total("requests_finished"),
    "finished_output_tokens_total": _total("finished_output_tokens"),
    "finished_output_requests_total": _total("finished_output_requests"),
    "ttft_p99_s": _latency("ttft", "p99_s"),
    "itl_p50_s": _latency("itl", "p50_s"),
    "itl_p99_s": _latency("itl", "p99_s"),
    "e2e_p99_s": _latency("e2e", "p99_s"),
    "queue_p99_s": _latency("queue", "p99_s"),
    "prefill_p99_s": _latency("prefill", "p99_s"),
    "process_rss_bytes": _process("rss_bytes"),
    "process_open_fds": _process("open_fds"),
    "host_mem_available_bytes": lambda cp: obj(cp.get("system")).get("memory_available_bytes"),
    "host_mem_total_bytes": lambda cp: obj(cp.get("system")).get("memory_total_bytes"),
    "disk_min_free_pct": _min_free_pct,
    "forward_progress": lambda cp: _bool(obj(cp.get("vllm")).get("forward_progress")),
    "health_ok": lambda cp: _bool(obj(obj(cp.get("vllm")).get("health")).get("ok")),
}


SERIES_INDEX = {name: i for i, name in enumerate(SERIES)}

# The events a checkpoint reports (those since the agent's previous one), counted by kind: the
# pattern model sums them over a window. A window's matrix keeps them after the series, so
# they are counted once per checkpoint, not once per analysis.
GPU_FAULT_KINDS = frozenset(
    {"xid", "ecc_dbe", "remapped_rows_pending", "remapped_rows_failure", "fallen_off_bus"}
)
EVENTS = (*(f"errors_{c}" for c in ERROR_CATEGORIES), "gpu_fault_events", "thermal_events")
COLUMNS = (*SERIES, *EVENTS)  # of a window's matrix
COLUMN_INDEX = {name: i for i, name in enumerate(COLUMNS)}


@dataclass
class Window:
    """Aligned series of one host's checkpoints, oldest first."""

    t: np.ndarray  # epoch seconds
    series: dict[str, np.ndarray]  # name -> values (NaN where missing)
    states: list[str]  # lifecycle_state of each checkpoint
    checkpoints: Sequence[dict[str, Any]] = field(repr=False, default=())
    # What several readers of one window need, worked out once: the run's start, local trends,
    # queue pressure (learning.forecast, learning.detectors), and from from_rows() the whole
    # matrix of series and the rows themselves.
    cache: dict[Any, Any] = field(repr=False, compare=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.series[name]

    def last(self, name: str) -> float:
        """Return the newest non-NaN value of `name`, or NaN."""
        values = self.series[name]
        present = values[~np.isnan(values)]
        return float(present[-1]) if len(present) else math.nan

    def upto(self, i: int) -> Window:
        """Return the window as it was at its checkpoint `i` (that one included)."""
        end = i + 1 if i >= 0 else len(self) + i + 1
        return Window(
            self.t[:end],
            {k: v[:end] for k, v in self.series.items()},
            self.states[:end],
            self.checkpoints[:end],
        )

    def since(self, t0: float) -> Window:
        """Return the part of the window at or after epoch `t0`."""
        keep = self.t >= t0
        return Window(
            self.t[keep],
            {k: v[keep] for k, v in self.series.items()},
            [s for s, k in zip(self.states, keep, strict=True) if k],
            [c for c, k in zip(self.checkpoints, keep, strict=True) if k],
        )


@dataclass(frozen=True, slots=True)
class Row:
    """One checkpoint's figures, read once: a stream of them builds windows cheaply."""

    t: float
    values: tuple[float, ...]  # in COLUMNS order: the series, then the event counts
    state: str
    checkpoint: dict[str, Any] = field(repr=False, compare=False)
    # Each GPU's used and total memory (bytes), in the checkpoint's order.
    gpu_used: tuple[float, ...] = ()
    gpu_total: tuple[float, ...] = ()
    # Each watched filesystem's path, free and total bytes, in the checkpoint's order.
    disk_paths: tuple[str, ...] = ()
    disk_free: tuple[float, ...] = ()
    disk_total: tuple[float, ...] = ()

    def value(self, name: str) -> float:
        return self.values[SERIES_INDEX[name]]


def row(checkpoint: dict[str, Any]) -> Row:
    """Return the figures of `checkpoint`; its time is NaN when it has no usable
    `collected_at` (such a row cannot be placed in a window)."""
    used, total = gpu_memory(checkpoint)
    paths, free, size = disk_space(checkpoint)
    state = checkpoint.get("lifecycle_state")
    return Row(
        t=collected_at(checkpoint),
        values=(*(_num(get(checkpoint)) for get in SERIES.values()), *events(checkpoint)),
        state=state if isinstance(state, str) and state else "unknown",
        checkpoint=checkpoint,
        gpu_used=used,
        gpu_total=total,
        disk_paths=paths,
        disk_free=free,
        disk_total=size,
    )


def events(checkpoint: dict[str, Any]) -> tuple[float, ...]:
    """Return the counts of the events `checkpoint` reports, in EVENTS order. An error without
    a usable count counts once; entries that are not objects are skipped."""
    counts = dict.fromkeys(ERROR_CATEGORIES, 0.0)
    faults = thermal = 0.0
    for e in _listed(checkpoint.get("errors")):
        if isinstance(e, dict) and e.get("category") in counts:
            count = _num(e.get("count"))
            counts[e["category"]] += count if count > 0 else 1.0
    for g in _listed(checkpoint.get("gpu_events")):
        kind = g.get("kind") if isinstance(g, dict) else None
        faults += kind in GPU_FAULT_KINDS
        thermal += kind == "thermal_throttle"
    return (*counts.values(), faults, thermal)


def gpu_memory(checkpoint: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return each GPU's used and total memory (bytes) in `checkpoint`, NaN where missing."""
    listed = gpus(checkpoint)
    return (
        tuple(_num(g.get("memory_used_bytes")) for g in listed),
        tuple(_num(g.get("memory_total_bytes")) for g in listed),
    )


def disk_space(
    checkpoint: dict[str, Any],
) -> tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]:
    """Return the paths, free and total bytes of the watched filesystems in `checkpoint`
    (NaN where a figure is missing; entries without a path are left out)."""
    listed = [
        d
        for d in _listed(obj(checkpoint.get("system")).get("disks"))
        if isinstance(d, dict) and isinstance(d.get("path"), str)
    ]
    return (
        tuple(d["path"] for d in listed),
        tuple(_num(d.get("free_bytes")) for d in listed),
        tuple(_num(d.get("total_bytes")) for d in listed),
    )


def collected_at(checkpoint: dict[str, Any]) -> float:
    """Return the checkpoint's `collected_at` in epoch seconds, NaN when it is not a time
    (epoch_seconds)."""
    return epoch_seconds(checkpoint.get("collected_at"))


def epoch_seconds(value: Any) -> float:
    """Return a time in epoch seconds, NaN when it is not one. The documented format is a
    number; other exporters write an ISO 8601 string (without a zone: UTC) or a number in a
    string, and Python callers a datetime."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                return math.nan
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return _num(value)


def from_rows(
    rows: Sequence[Row], matrix: np.ndarray | None = None, t: np.ndarray | None = None
) -> Window:
    """Return the window of `rows`, which must be oldest first. `matrix` (rows x COLUMNS) and
    `t`, when given, are their figures already read (learning.window.Rows keeps them)."""
    if matrix is None:
        matrix = np.array([r.values for r in rows], dtype=float).reshape(len(rows), len(COLUMNS))
    series = {name: matrix[:, i] for i, name in enumerate(SERIES)}
    return Window(
        np.array([r.t for r in rows]) if t is None else t,
        series,
        [r.state for r in rows],
        [r.checkpoint for r in rows],
        # Read once per checkpoint, kept whole: the pattern model's features read every series
        # and event count (rows x COLUMNS), the GPU memory leak detector every GPU of a
        # multi-GPU host.
        cache={"matrix": matrix, "rows": rows},
    )


class Rows:
    """A host's recent rows, oldest first, with their times and figures also kept as one
    matrix: a window of them then costs one copy, not a conversion of every row."""

    def __init__(self) -> None:
        self._rows: deque[Row] = deque()
        self._matrix = np.empty((64, 1 + len(COLUMNS)))  # column 0: the time
        self._first = 0  # the matrix row of the oldest row

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Row:
        return self._rows[index]

    def append(self, new: Row) -> None:
        end = self._first + len(self._rows)
        if end == len(self._matrix):
            # A new matrix, not a shift in place: a window taken earlier keeps its figures.
            kept = self._matrix[self._first : end]
            self._matrix = np.empty((len(kept) + 64, kept.shape[1]))
            self._matrix[: len(kept)] = kept
            self._first, end = 0, len(kept)
        self._matrix[end, 0] = new.t
        self._matrix[end, 1:] = new.values
        self._rows.append(new)

    def pop(self) -> Row:
        """Remove and return the newest row."""
        return self._rows.pop()

    def popleft(self) -> Row:
        """Remove and return the oldest row."""
        self._first += 1
        return self._rows.popleft()

    def window(self) -> Window:
        block = self._matrix[self._first : self._first + len(self._rows)].copy()
        # The times contiguous: the compiled kernels take them so, without a copy each.
        return from_rows(list(self._rows), block[:, 1:], np.ascontiguousarray(block[:, 0]))


def padded(rows: Sequence[tuple[float, ...]]) -> np.ndarray:
    """Return `rows` of possibly different lengths as one matrix, NaN-padded on the right."""
    widths = {len(r) for r in rows}
    if len(widths) == 1:  # the same GPUs all along: the common case
        return np.array(rows, dtype=float).reshape(len(rows), widths.pop())
    width = max(widths, default=0)
    out = np.full((len(rows), width), math.nan)
    for i, values in enumerate(rows):
        out[i, : len(values)] = values
    return out


def gpu_memories(
    w: Window, start: int = 0, end: int | None = None
) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """Return each GPU's used and total memory (bytes) at checkpoints `start` to `end`
    (excluded) of `w`, as gpu_memory does: read once per checkpoint where `w` keeps its rows."""
    rows = w.cache.get("rows")
    if rows is not None:
        return [(r.gpu_used, r.gpu_total) for r in rows[start:end]]
    return [gpu_memory(cp) for cp in w.checkpoints[start:end]]


def gpu_shares(w: Window) -> np.ndarray:
    """Return each GPU's share of its memory in use (%) at each checkpoint of `w`: one column
    per GPU, in the checkpoints' order; NaN where missing."""
    memory = gpu_memories(w)
    used, total = padded([u for u, _ in memory]), padded([size for _, size in memory])
    with np.errstate(all="ignore"):
        shares: np.ndarray = 100.0 * used / np.where(total > 0, total, math.nan)
    return shares


def window(checkpoints: Sequence[dict[str, Any]]) -> Window:
    """Return the series of `checkpoints` (dicts, oldest first; unsorted input is sorted).
    Entries that are not objects or have no usable `collected_at` are left out."""
    rows = [row(cp) for cp in checkpoints if isinstance(cp, dict)]
    return from_rows(sorted((r for r in rows if not math.isnan(r.t)), key=lambda r: r.t))


def _num(value: Any) -> float:
    if value is None or isinstance(value, bool | str):
        return float(value) if isinstance(value, bool) else math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if -MAX_READING <= number <= MAX_READING else math.nan


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _bool(value: Any) -> float | None:
    return None if value is None else float(bool(value))
