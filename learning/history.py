"""Failures found in a host's checkpoints, and labelled windows for the pattern model. Pure.

The labels come from what any fleet's checkpoints say, so a real fleet's history trains the
model exactly as the simulator's does (the simulator's scenario timeline is kept apart, as
ground truth for the evaluation: simulator/history.py):

    a failed lifecycle state   the engine died; its type is the most specific cause seen in
                               the failed episode (states and classified errors), else
                               engine_dead (a hang's death, an unexplained one)
    classified errors          GPU faults (illegal access, XID) and host resources
    GPU events                 XIDs, double-bit ECC, pending or failed row remaps, a lost GPU
    metric conditions          the failures that do not crash vLLM: a preemption storm
                               (PREEMPTION_STORM preemptions within STORM_S: the KV cache is
                               exhausted; it starts at the first of them), thermal clock
                               cuts, no forward progress with requests running (a hang)
    incidents                  FailureEvents passed in by the caller (operators' records)

A failure is an episode: it starts once and is ongoing until it clears (the server serves
again, the condition is gone for CLEAR_S). Windows are labelled, for each failure type,
with the seconds until the next start within the horizon; a type already ongoing at the
window's end is marked so, and is no prediction target there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learning.features import FEATURE_NAMES, WINDOW_S, features
from learning.prediction import DEFAULT_HORIZON_S, FAILURE_TYPES
from learning.window import Window, window

# Failed lifecycle states -> failure type. The startup failures (model load, configuration)
# are the validator's business: the server never served, there was nothing to predict.
FAILED_STATE_TYPES = {
    "failed_cuda_oom": "cuda_oom",
    "failed_nccl": "nccl_error",
    "failed_gpu_hardware": "gpu_hardware",
    "failed_system_resource": "system_resource",
    "failed_kv_cache_exhausted": "kv_cache_exhausted",
    "failed_hang": "engine_dead",
    "failed_engine_dead": "engine_dead",
    "failed_network": "engine_dead",
    "failed_other": "engine_dead",
}
# Error categories that name a death's cause, strongest first (the tracker's order).
CAUSE_CATEGORIES = {"cuda_oom": "cuda_oom", "nccl_error": "nccl_error",
                    "cuda_illegal_access_or_xid": "gpu_hardware",
                    "system_resource": "system_resource"}  # fmt: skip
# Errors that are failures by themselves, dead engine or not.
FAILURE_CATEGORIES = {"cuda_illegal_access_or_xid": "gpu_hardware",
                      "system_resource": "system_resource"}  # fmt: skip
GPU_FAULT_KINDS = frozenset(
    {"ecc_dbe", "remapped_rows_pending", "remapped_rows_failure", "fallen_off_bus"}
)
UP_STATES = frozenset({"serving", "degraded"})  # a server that answers: worth predicting for
# A condition that lasts this many checkpoints in a row is a failure (5 s apart: 15 s, as
# the agent's stall_after_s), and one gone for CLEAR_S is over.
CONDITION_CHECKPOINTS = 3
CLEAR_S = 60.0
# A preemption storm: this many preemptions within STORM_S (a few are normal under load).
PREEMPTION_STORM = 5
STORM_S = 60.0
# A host watched for less than this has no history to read a pattern in.
MIN_HISTORY_S = 60.0
PIECE_BEFORE_S = WINDOW_S + MIN_HISTORY_S  # a piece of history read alone needs this before it


@dataclass(frozen=True, slots=True)
class FailureEvent:
    failure_type: str  # one of FAILURE_TYPES
    started_at: float  # epoch s
    ended_at: float | None  # epoch s when it cleared; None: still going at the end
    source: str  # what says so: "lifecycle:failed_cuda_oom", "metric:preemptions", ...

    def ongoing(self, t: float) -> bool:
        return self.started_at <= t and (self.ended_at is None or t < self.ended_at)


@dataclass(frozen=True, slots=True)
class Label:
    """What followed a window: seconds to each failure type that began within the horizon,
    and the types already ongoing at the window's end."""

    time_to_failure_s: dict[str, float] = field(default_factory=dict)
    ongoing: frozenset[str] = frozenset()


def failures_in(
    checkpoints: Sequence[dict[str, Any]], incidents: Iterable[FailureEvent] = ()
) -> list[FailureEvent]:
    """Return the failure episodes one host's checkpoints (dicts, oldest first) show."""
    w = window(checkpoints)
    return _merged([*_deaths(w), *_faults(w), *_conditions(w), *incidents])


def _merged(found: list[FailureEvent]) -> list[FailureEvent]:
    """Return the events, oldest first, without those that start while another of the same
    type is ongoing (one failure seen twice: a GPU fault in the errors and in the events)."""
    kept: list[FailureEvent] = []
    for f in sorted(found, key=lambda f: (f.started_at, f.failure_type)):
        if not any(k.failure_type == f.failure_type and k.ongoing(f.started_at) for k in kept):
            kept.append(f)
    return kept


def labels_at(
    times: Sequence[float], failures: Sequence[FailureEvent], horizon_s: float
) -> list[Label]:
    """Return the label of a window ending at each of `times` (epoch s)."""
    labels = []
    for t in times:
        ttf: dict[str, float] = {}
        for f in failures:
            wait_s = f.started_at - t
            if 0 < wait_s <= horizon_s and wait_s < ttf.get(f.failure_type, math.inf):
                ttf[f.failure_type] = wait_s
        ongoing = frozenset(f.failure_type for f in failures if f.ongoing(t))
        labels.append(Label(ttf, ongoing))
    return labels


def labelled_windows(
    checkpoints: Sequence[dict[str, Any]],
    failures: Sequence[FailureEvent] | None = None,
    *,
    horizon_s: float = DEFAULT_HORIZON_S,
    window_s: float = WINDOW_S,
    every_s: float = 10.0,
) -> tuple[list[Window], list[Label]]:
    """Return windows of one host's history, every `every_s`, with their labels.

    Only windows that end with the server up (serving or degraded) are returned: a failure
    is predicted for a running server. `failures` default to `failures_in(checkpoints)`.
    """
    whole = window(checkpoints)
    if failures is None:
        failures = failures_in(checkpoints)
    ends = _sample_ends(whole, every_s)
    windows = [trailing(whole, end, window_s) for end in ends]
    return windows, labels_at([float(whole.t[end]) for end in ends], failures, horizon_s)


def labelled_rows(
    checkpoints: Sequence[dict[str, Any]],
    *,
    since: float = -math.inf,
    until: float = math.inf,
    quiet_every_s: float = 10.0,
    horizon_s: float = DEFAULT_HORIZON_S,
    every_s: float = 10.0,
) -> tuple[np.ndarray, list[float], list[Label]]:
    """Return the feature rows (learning.features), end times and labels of the windows of
    one host's history that end in [since, until): each one a failure followed within the
    horizon, every `every_s`, and the others only every `quiet_every_s`.

    For a long history read in pieces (its checkpoints are many megabytes an hour), give
    each piece PIECE_BEFORE_S before `since` and the horizon after `until`: its windows are
    then whole and its labels see the failures that follow.
    """
    windows, labels = labelled_windows(checkpoints, horizon_s=horizon_s, every_s=every_s)
    rows, ends, kept = [], [], []
    quiet_at = -math.inf
    for w, label in zip(windows, labels, strict=True):
        end = float(w.t[-1])
        if not since <= end < until:
            continue
        if not label.time_to_failure_s:
            if end - quiet_at < quiet_every_s:
                continue
            quiet_at = end
        rows.append(features(w, end))
        ends.append(end)
        kept.append(label)
    x = np.vstack(rows) if rows else np.empty((0, len(FEATURE_NAMES)))
    return x, ends, kept


def training_set(
    histories: Iterable[tuple[str, Sequence[dict[str, Any]]]],
    *,
    horizon_s: float = DEFAULT_HORIZON_S,
    every_s: float = 10.0,
) -> tuple[list[Window], list[Label], list[str]]:
    """Return the labelled windows of several hosts' histories, each given as (group name,
    checkpoints), with the group of each window (held-out splits keep a group whole)."""
    windows: list[Window] = []
    labels: list[Label] = []
    groups: list[str] = []
    for group, checkpoints in histories:
        w, lb = labelled_windows(checkpoints, horizon_s=horizon_s, every_s=every_s)
        windows += w
        labels += lb
        groups += [group] * len(w)
    return windows, labels, groups


def _sample_ends(w: Window, every_s: float) -> list[int]:
    ends, last = [], -math.inf
    for i, (t, state) in enumerate(zip(w.t, w.states, strict=True)):
        if t - w.t[0] >= MIN_HISTORY_S and state in UP_STATES and t - last >= every_s:
            ends.append(i)
            last = t
    return ends


def trailing(w: Window, end: int, window_s: float = WINDOW_S) -> Window:
    """Return the part of `w` that ends at index `end` and spans at most `window_s`."""
    start = int(np.searchsorted(w.t, w.t[end] - window_s, side="left"))
    stop = end + 1
    return Window(
        w.t[start:stop],
        {k: v[start:stop] for k, v in w.series.items()},
        w.states[start:stop],
        w.checkpoints[start:stop],
    )


# ---------------------------------------------------------------- deaths


def _deaths(w: Window) -> list[FailureEvent]:
    """A failed episode runs from the first failed checkpoint to the next one serving."""
    found, start = [], None
    for i, state in enumerate(w.states):
        if state.startswith("failed_") and start is None:
            start = i
        elif state in UP_STATES and start is not None:
            found.append(_death(w, start, i))
            start = None
    if start is not None:
        found.append(_death(w, start, None))
    return found


def _death(w: Window, start: int, end: int | None) -> FailureEvent:
    episode = w.checkpoints[start:end]
    states = {cp.get("lifecycle_state") for cp in episode}
    categories = {e.get("category") for cp in episode for e in cp.get("errors") or ()}
    cause = next((c for cat, c in CAUSE_CATEGORIES.items() if cat in categories), None)
    by_state = [FAILED_STATE_TYPES[s] for s in FAILED_STATE_TYPES if s in states]
    specific = [t for t in by_state if t != "engine_dead"]
    failure_type = specific[0] if specific else cause or "engine_dead"
    first = w.checkpoints[start]
    at = _failed_at(first, float(w.t[start]))
    ended = float(w.t[end]) if end is not None else None
    return FailureEvent(failure_type, at, ended, f"lifecycle:{first.get('lifecycle_state')}")


def _failed_at(cp: dict[str, Any], collected_at: float) -> float:
    # The transition says when the agent saw it fail, which is earlier than the checkpoint.
    times = [
        float(tr["at"])
        for tr in cp.get("transitions") or ()
        if str(tr.get("to_state", "")).startswith("failed_") and tr.get("at") is not None
    ]
    return min(times) if times else collected_at


# ---------------------------------------------------------------- faults


def _faults(w: Window) -> list[FailureEvent]:
    """GPU faults and resource errors: each is a failure once, then ongoing until restart."""
    found: list[FailureEvent] = []
    for i, cp in enumerate(w.checkpoints):
        for kind, at in _fault_marks(cp, float(w.t[i])):
            if not any(f.failure_type == kind and f.ongoing(at) for f in found):
                found.append(FailureEvent(kind, at, _next_restart(w, i), f"checkpoint:{kind}"))
    return found


def _fault_marks(cp: dict[str, Any], t: float) -> list[tuple[str, float]]:
    marks = []
    for e in cp.get("errors") or ():
        kind = FAILURE_CATEGORIES.get(str(e.get("category")))
        if kind is not None:
            marks.append((kind, float(e.get("first_seen_at") or t)))
    for g in cp.get("gpu_events") or ():
        fault = g.get("kind") in GPU_FAULT_KINDS
        if fault or (g.get("kind") == "xid" and g.get("severity") == "critical"):
            marks.append(("gpu_hardware", float(g.get("at") or t)))
    return sorted(marks, key=lambda m: m[1])


def _next_restart(w: Window, i: int) -> float | None:
    """Return when the server next starts serving anew after checkpoint `i` (a restart)."""
    down = False
    for j in range(i + 1, len(w)):
        state = w.states[j]
        down = down or state not in UP_STATES
        if down and state in UP_STATES:
            return float(w.t[j])
    return None


# ---------------------------------------------------------------- conditions


def _conditions(w: Window) -> list[FailureEvent]:
    up = np.array([s in UP_STATES for s in w.states], dtype=bool)
    running = np.nan_to_num(w["requests_running"]) > 0
    preempting = (np.nan_to_num(w["preemptions_per_s"]) > 0) & up
    throttled = (np.nan_to_num(w["gpu_throttled"]) > 0) & up
    stalled = (w["forward_progress"] == 0) & running & up
    conditions = {
        "kv_cache_exhausted": (preempting, _storm_onsets(w, preempting)),
        "thermal_throttling": (throttled, _streak_onsets(w.t, throttled)),
        "hang": (stalled, _streak_onsets(w.t, stalled)),
    }
    found = []
    for failure_type, (holds, onsets) in conditions.items():
        for start, end in _episodes(w.t, holds, onsets, up):
            found.append(FailureEvent(failure_type, start, end, f"metric:{failure_type}"))
    return found


def _streak_onsets(t: np.ndarray, holds: np.ndarray) -> np.ndarray:
    """Return, per checkpoint, the start of the streak of CONDITION_CHECKPOINTS or more
    checkpoints where `holds` that it ends (NaN where there is none)."""
    onsets = np.full(len(t), math.nan)
    streak = 0
    for i in range(len(t)):
        streak = streak + 1 if holds[i] else 0
        if streak >= CONDITION_CHECKPOINTS:
            onsets[i] = t[i - streak + 1]
    return onsets


def _storm_onsets(w: Window, preempting: np.ndarray) -> np.ndarray:
    """Return, per checkpoint, the first preemption of a storm (PREEMPTION_STORM within
    STORM_S) going on there (NaN where there is none)."""
    t = w.t
    gaps = np.diff(t, prepend=t[0] - 5.0)
    counts = np.nan_to_num(w["preemptions_per_s"]) * gaps
    onsets = np.full(len(t), math.nan)
    for i in range(len(t)):
        recent = (t > t[i] - STORM_S) & (t <= t[i])
        if counts[recent].sum() >= PREEMPTION_STORM:
            onsets[i] = t[recent & preempting][0]
    return onsets


def _episodes(
    t: np.ndarray, holds: np.ndarray, onsets: np.ndarray, up: np.ndarray
) -> list[tuple[float, float | None]]:
    """Return (start, end) of each episode: one starts where `onsets` has a time, and ends
    once `holds` has been false for CLEAR_S, or when the server goes down."""
    episodes: list[tuple[float, float | None]] = []
    start: float | None = None
    last_held = -math.inf
    for i in range(len(t)):
        if start is not None and (not up[i] or (not holds[i] and t[i] - last_held >= CLEAR_S)):
            episodes.append((start, float(t[i])))
            start = None
        if holds[i]:
            last_held = float(t[i])
        if start is None and not math.isnan(onsets[i]):
            start = float(onsets[i])
    if start is not None:
        episodes.append((start, None))
    return episodes


def failure_types_seen(failures: Iterable[FailureEvent]) -> list[str]:
    """Return the failure types among `failures`, in FAILURE_TYPES order."""
    seen = {f.failure_type for f in failures}
    return [t for t in FAILURE_TYPES if t in seen]
