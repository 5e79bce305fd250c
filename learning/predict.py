"""Predict failures from a window of one host's checkpoints: the one entry point.

    analyze(window, now) -> list[Prediction]

`window` is a list of checkpoint dicts (the documented JSON format, agent/checkpoint.py),
oldest first; `now` is epoch seconds. Five kinds of evidence are combined per failure type:

1. the named detectors (learning/detectors/): leaks, exhaustion trends, degradation;
2. the forecasts (learning/forecast.py): when a key metric crosses its guardrail threshold;
3. the pattern model (learning/patterns.py), when one is given: what preceded past failures;
4. the fleet's state graph (learning/state_graph.py), when given: how often hosts in this
   state fail within the horizon, a prior rather than a verdict;
5. streaming anomaly detectors (learning/anomaly.py) on latency and throughput, and an
   isolation forest over all of a host's figures together (learning/multivariate.py), fitted
   on its own serving checkpoints, both kept per host by HostAnalyzer: unusual behaviour the
   rules above do not name.

Each source gives a probability for a failure type. The first three read the same series of
this host (a KV cache climbing is the detector's trend, the forecast's crossing and the
model's features at once), so together they count as their strongest belief, not as
independent reasons: a noisy-OR over them turned three lukewarm readings of one load spike
into an alarm (evaluate/run's healthy runs: 36 false alarms per host-day with it; 3.5 counting
the strongest only, over 48 host-hours). The anomalies count as their strongest too: one
slowdown is unusual for the latency detectors and the forest at once (counted apart, they
opened 2 false alarms per host-day in the healthy runs). That belief, the anomalies' and the
fleet's prior are then combined with a noisy-OR. The time to failure is the soonest among the
sources that believe it, and the confidence grows with the number of sources that agree.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from learning import detectors, forecast, multivariate
from learning.anomaly import ALARM_THRESHOLD, make_detector, rarity
from learning.prediction import (
    DEFAULT_HORIZON_S,
    RECOMMENDED_MITIGATIONS,
    Evidence,
    Forecast,
    Prediction,
)
from learning.window import (
    Row,
    Rows,
    Window,
    collected_at,
    epoch_seconds,
    gpu_memories,
    gpu_shares,
    row,
)

WINDOW_S = 600.0  # the checkpoints a host's analysis looks back on
# Polled faster than this, a host's window keeps only the newest checkpoint of each slot:
# the analysis then costs the same at 1 s polls as at 5 s.
MIN_SPACING_S = 5.0
FORECAST_METRICS = ("gpu_mem_used_pct", "kv_cache_usage_pct", "requests_waiting", "itl_p99_s")
ANOMALY_METRICS = ("itl_p99_s", "ttft_p99_s", "generation_tokens_per_s")

# Probability a detector's finding stands for, by severity; a limit beyond the horizon
# halves it (the failure is coming, not within the next five minutes).
SEVERITY_PROBABILITY = {"critical": 0.92, "warning": 0.7, "info": 0.3}
# A forecast crossing the threshold that defines the failure, within the horizon.
CROSSING_FAILURE = {
    ("kv_cache_usage_pct", "kv_cache_full"): "kv_cache_exhausted",
    ("gpu_mem_used_pct", "gpu_mem_full"): "cuda_oom",
    ("gpu_temp_c", "thermal_slowdown"): "thermal_throttling",
}
# Below the hysteresis' opening line on its own: a trend line crossing a threshold opens a
# prediction only with a detector's or the model's support (measured with evaluate/run:
# alone it opened on every short load spike that never exhausted the KV cache).
CROSSING_PROBABILITY = 0.4
# The state graph is a base rate for the whole fleet: it counts for less than this host's data.
GRAPH_WEIGHT = 0.5
GRAPH_FAILURES = {
    "failed_cuda_oom": "cuda_oom",
    "failed_kv_cache_exhausted": "kv_cache_exhausted",
    "failed_nccl": "nccl_error",
    "failed_hang": "hang",
    "failed_engine_dead": "engine_dead",
    "failed_gpu_hardware": "gpu_hardware",
    "failed_system_resource": "system_resource",
}
ANOMALY_WEIGHT = 0.45
# The isolation forest learns a host's usual combinations of figures from its own serving
# checkpoints: from an hour of them (at a 5 s poll), refitted on the newest USUAL_ROWS every
# two hours of new ones. A fit costs about 0.2 s whatever the rows (scikit-learn's overhead
# per tree): 0.14 ms a checkpoint. The rows are kept as float32: 140 kB a host.
USUAL_FIRST_ROWS = 720
USUAL_REFIT_ROWS = 1440
USUAL_ROWS = 1440
# One checkpoint in 200 of a healthy host is rarer than 199 in 200 by definition: a reason only
# when the newest UNUSUAL_FOR checkpoints all are (evaluate/run's healthy runs: one at a time,
# 12 false degradation alarms per host-day).
UNUSUAL_FOR = 3
# Evidence sources that read this host's own series (Evidence.source prefixes).
HOST_SERIES_SOURCES = ("detector:", "forecast:", "pattern")
ANOMALY_SOURCE = "anomaly:"
MIN_PROBABILITY = 0.05  # weaker combined beliefs are not reported


@dataclass
class Analysis:
    predictions: list[Prediction]
    forecasts: list[Forecast]


@dataclass
class _Belief:
    """One source's belief in one failure type."""

    probability: float
    time_to_failure_s: float | None
    evidence: Evidence
    confidence: float | None = None  # the pattern model's own, when it gives one


@dataclass
class HostAnalyzer:
    """One host's rolling window and streaming anomaly detectors, fed checkpoint by checkpoint.

    The worker keeps one per host, so each analysis costs one checkpoint's work, not a window's.
    """

    horizon_s: float = DEFAULT_HORIZON_S
    window_s: float = WINDOW_S
    _rows: Rows = field(default_factory=Rows)
    _anomaly: dict[str, Any] = field(default_factory=dict)
    _anomaly_scores: dict[str, float] = field(default_factory=dict)
    _usual: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=USUAL_ROWS))
    _usual_model: multivariate.Model | None = None
    _since_fit: int = 0
    _combination: multivariate.Score | None = None  # the newest checkpoint's, with a model
    _unusual_run: int = 0  # serving checkpoints in a row whose combination was unusual

    def add(self, checkpoint: dict[str, Any]) -> bool:
        """Add the host's next checkpoint (dict); return False when it is ignored: not an
        object, without a usable `collected_at`, or older than or as old as the newest."""
        if not isinstance(checkpoint, dict):
            return False
        new = row(checkpoint)
        if math.isnan(new.t) or (self._rows and new.t <= self._rows[-1].t):
            return False
        if len(self._rows) >= 2 and new.t - self._rows[-2].t < MIN_SPACING_S:
            self._rows.pop()  # the slot's newest checkpoint stands for it
        self._rows.append(new)
        while self._rows and self._rows[0].t < new.t - self.window_s:
            self._rows.popleft()
        self._score_anomalies(new)
        self._score_combination(new)
        return True

    @property
    def newest_t(self) -> float:
        """The newest checkpoint's time (epoch s), NaN before the first."""
        return self._rows[-1].t if self._rows else math.nan

    def analyze(
        self,
        now: float | datetime | str,
        *,
        model: Any = None,
        graph: Any = None,
        limits: Mapping[str, Mapping[str, float]] | None = None,
    ) -> Analysis:
        """Return the predictions and forecasts for the host as of `now` (epoch seconds, or a
        datetime or ISO 8601 time). `limits`: more lines (metric -> {name: value}) whose
        crossing times the forecasts give, beside their own. Raises ValueError when `now` is
        not a time."""
        if not self._rows:
            return Analysis([], [])
        now = _now(now)
        w = self._rows.window()
        gpu = _filling_gpu(w, self.horizon_s)
        forecasts = [
            forecast.forecast(gpu if m == "gpu_mem_used_pct" else w, m, now, self.horizon_s,
                              {**forecast.default_thresholds(w, m), **(limits or {}).get(m, {})})
            for m in FORECAST_METRICS
        ]  # fmt: skip
        beliefs = _beliefs(w, now, self.horizon_s, forecasts, model, graph)
        beliefs.extend(self._anomaly_beliefs())
        beliefs.extend(self._combination_beliefs())
        return Analysis(_combine(beliefs, self.horizon_s), forecasts)

    def _score_anomalies(self, new: Row) -> None:
        for metric in ANOMALY_METRICS:
            value = new.value(metric)
            detector = self._anomaly.get(metric)
            if detector is None:
                detector = self._anomaly[metric] = make_detector()
            self._anomaly_scores[metric] = detector.score(new.t, value)

    def _score_combination(self, new: Row) -> None:
        """Score the newest checkpoint's figures together against the host's usual ones, then
        learn them: only serving checkpoints, as they are what is usual."""
        self._combination = None
        if new.state != "serving" or len(self._rows) < 2:
            self._unusual_run = 0
            return
        features = multivariate.row_features(self._rows[-2], new)
        if self._usual_model is not None:
            self._combination = multivariate.score_features(self._usual_model, features)
            self._unusual_run = self._unusual_run + 1 if self._combination.alarm else 0
        self._usual.append(features.astype(np.float32))
        self._since_fit += 1
        due = self._usual_model is None or self._since_fit >= USUAL_REFIT_ROWS
        if len(self._usual) >= USUAL_FIRST_ROWS and due:
            self._since_fit = 0
            with contextlib.suppress(ValueError):  # no figure measured at all: nothing yet
                self._usual_model = multivariate.fit_rows(np.array(self._usual, dtype=float))

    def _combination_beliefs(self) -> list[tuple[str, _Belief]]:
        found = self._combination
        if found is None or self._unusual_run < UNUSUAL_FOR:
            return []
        why = "; ".join(e.detail for e in multivariate.evidence(found))
        evidence = Evidence("anomaly:multivariate",
                            f"this host's figures together are unusual for it: {why}",
                            round(found.likelihood, 4))  # fmt: skip
        return [("performance_degradation",
                 _Belief(ANOMALY_WEIGHT * found.likelihood, None, evidence))]  # fmt: skip

    def _anomaly_beliefs(self) -> list[tuple[str, _Belief]]:
        beliefs = []
        for metric, score in self._anomaly_scores.items():
            if score >= ALARM_THRESHOLD:
                evidence = Evidence(
                    f"anomaly:{metric}", f"{metric} is unusual for this host", round(score, 3)
                )
                # As likely as the event is rare: a 1-in-10^10 one counts ANOMALY_WEIGHT.
                belief = _Belief(ANOMALY_WEIGHT * rarity(score) / 10.0, None, evidence)
                beliefs.append(("performance_degradation", belief))
        return beliefs


def analyze(
    window: Sequence[dict[str, Any]],
    now: float | datetime | str,
    *,
    model: Any = None,
    graph: Any = None,
    horizon_s: float = DEFAULT_HORIZON_S,
) -> list[Prediction]:
    """Return the predicted failures of the host whose checkpoints (dicts) are in `window`.
    Entries that are not objects or have no usable `collected_at` are left out; malformed
    parts of a checkpoint read as missing."""
    now = _now(now)
    analyzer = HostAnalyzer(horizon_s=horizon_s, window_s=math.inf)
    usable = [cp for cp in window if isinstance(cp, dict) and not math.isnan(collected_at(cp))]
    for checkpoint in sorted(usable, key=collected_at):
        analyzer.add(checkpoint)
    return analyzer.analyze(now, model=model, graph=graph).predictions


def _now(now: Any) -> float:
    t = epoch_seconds(now)
    if math.isnan(t):
        raise ValueError(f"now must be a time (epoch seconds, a datetime or ISO 8601), not {now!r}")
    return t


class PredictiveFailureDetector:
    """The seed's name for a host's running predictor: feed checkpoints, read predictions."""

    def __init__(self, prediction_horizon: float = DEFAULT_HORIZON_S, *, model: Any = None,
                 graph: Any = None) -> None:  # fmt: skip
        self._analyzer = HostAnalyzer(horizon_s=prediction_horizon)
        self.model, self.graph = model, graph

    def analyze_checkpoint(self, checkpoint: dict[str, Any]) -> list[Prediction]:
        self._analyzer.add(checkpoint)
        # As of the newest checkpoint: one left out (no usable time, or older) changes nothing.
        now = self._analyzer.newest_t
        return self._analyzer.analyze(now, model=self.model, graph=self.graph).predictions


def _filling_gpu(w: Window, horizon_s: float) -> Window:
    """Return `w` with its GPU memory share (gpu_mem_used_pct, the fullest GPU's) replaced by
    the share of the GPU that the last minutes' rise takes fullest within `horizon_s`: on a
    host of several GPUs, a foreign process filling a GPU that was the emptiest overtakes the
    fullest one only shortly before it is full, and the fullest one's series is flat until then.
    Plain Python: numpy's calls on eight numbers cost ten times as much."""
    if not w.last("gpu_count") > 1:
        return w
    start = int(np.searchsorted(w.t, w.t[-1] - forecast.LOOKBACK_S))
    first, last = _mean_shares(w, start, start + 3), _mean_shares(w, len(w) - 3, len(w))
    if len(first) != len(last) or len(last) < 2:
        return w  # GPUs came or went within the lookback: the fullest one's series stands
    span = max(float(w.t[-1] - w.t[start]), 1.0)
    ahead = [b + (max(b - a, 0.0) if a == a else 0.0) / span * horizon_s
             for a, b in zip(first, last, strict=True)]  # fmt: skip
    best = _largest(ahead)
    if best is None or best == _largest(last) == _largest(first):
        return w  # the fullest GPU all along: the common case, with the window's caches
    series = {**w.series, "gpu_mem_used_pct": gpu_shares(w)[:, best]}
    return Window(
        w.t, series, w.states, w.checkpoints, {"run_start": forecast.current_run_start(w)}
    )


def _mean_shares(w: Window, start: int, end: int) -> list[float]:
    """Return each GPU's mean share of its memory in use (%) at checkpoints `start` to `end`
    (excluded), as many as the newest of them has; NaN for a GPU without figures."""
    memory = gpu_memories(w, start, end)
    width = len(memory[-1][0]) if memory else 0
    sums, counts = [0.0] * width, [0] * width
    for used, total in memory:
        for k in range(min(width, len(used), len(total))):
            if total[k] > 0 and used[k] >= 0:  # False for NaN
                sums[k] += 100.0 * used[k] / total[k]
                counts[k] += 1
    return [s / c if c else math.nan for s, c in zip(sums, counts, strict=True)]


def _largest(values: list[float]) -> int | None:
    """Return the index of the largest number in `values` (NaN is none), None without one."""
    numbers = [(v, i) for i, v in enumerate(values) if v == v]
    return max(numbers)[1] if numbers else None


def _beliefs(
    w: Window, now: float, horizon_s: float, forecasts: list[Forecast], model: Any, graph: Any
) -> list[tuple[str, _Belief]]:
    beliefs = [(f.failure_type, _finding_belief(f, horizon_s)) for f in detectors.detect(w, now)]
    beliefs += _crossing_beliefs(forecasts, now, horizon_s)
    beliefs += _crossing_beliefs([forecast.forecast(w, "gpu_temp_c", now, horizon_s)], now,
                                 horizon_s)  # fmt: skip
    if model is not None:
        beliefs += _model_beliefs(model, w, now)
    if graph is not None:
        beliefs += _graph_beliefs(graph, w, now, horizon_s)
    return beliefs


# Latency worse than the host's own baseline is a symptom more often than a failure to come:
# a warning alone stays below the opening line.
DEGRADATION_DISCOUNT = 0.7


def _finding_belief(finding: detectors.Finding, horizon_s: float) -> _Belief:
    probability = SEVERITY_PROBABILITY[finding.severity]
    if finding.failure_type == "performance_degradation":
        probability *= DEGRADATION_DISCOUNT
    eta = finding.time_to_exhaustion_s
    if eta is not None and eta > horizon_s:
        probability *= 0.5
    return _Belief(probability, eta, finding.evidence())


def _crossing_beliefs(
    forecasts: Sequence[Forecast], now: float, horizon_s: float
) -> list[tuple[str, _Belief]]:
    beliefs = []
    for fc in forecasts:
        for threshold, at in fc.crossings.items():
            failure_type = CROSSING_FAILURE.get((fc.metric, threshold))
            if failure_type is None or at is None or at - now > horizon_s:
                continue
            eta = max(at - now, 0.0)
            evidence = Evidence(
                f"forecast:{fc.metric}",
                f"{fc.metric} forecast to reach {threshold} in {eta:.0f} s",
                eta,
            )
            beliefs.append((failure_type, _Belief(CROSSING_PROBABILITY, eta, evidence)))
    return beliefs


def _model_beliefs(model: Any, w: Window, now: float) -> list[tuple[str, _Belief]]:
    from learning import patterns

    beliefs = []
    for p in patterns.predict(model, w, now, explain=False):
        evidence = p.evidence[0] if p.evidence else Evidence("pattern", "the pattern model")
        beliefs.append(
            (p.failure_type, _Belief(p.probability, p.time_to_failure_s, evidence, p.confidence))
        )
    return beliefs


def _graph_beliefs(
    graph: Any, w: Window, now: float, horizon_s: float
) -> list[tuple[str, _Belief]]:
    state = w.states[-1]
    elapsed = _time_in_state(w, now)
    beliefs = []
    for failed_state, p in graph.failure_probabilities(state, horizon_s, elapsed).items():
        failure_type = GRAPH_FAILURES.get(failed_state)
        if failure_type is None or p < 0.01 or state == failed_state:
            continue
        evidence = Evidence("state_graph",
                            f"hosts in {state} reach {failed_state} within {horizon_s:.0f} s "
                            f"{100 * p:.0f} % of the time", round(p, 3))  # fmt: skip
        beliefs.append((failure_type, _Belief(GRAPH_WEIGHT * p, None, evidence)))
    return beliefs


def _time_in_state(w: Window, now: float) -> float:
    state, since = w.states[-1], w.t[-1]
    for t, s in zip(reversed(w.t), reversed(w.states), strict=True):
        if s != state:
            break
        since = t
    return max(now - float(since), 0.0)


def _combine(beliefs: list[tuple[str, _Belief]], horizon_s: float) -> list[Prediction]:
    by_type: dict[str, list[_Belief]] = {}
    for failure_type, belief in beliefs:
        by_type.setdefault(failure_type, []).append(belief)
    predictions = [_prediction(t, bs, horizon_s) for t, bs in by_type.items()]
    kept = [p for p in predictions if p.probability >= MIN_PROBABILITY]
    return sorted(kept, key=lambda p: p.probability, reverse=True)


def _prediction(failure_type: str, beliefs: list[_Belief], horizon_s: float) -> Prediction:
    miss = 1.0
    for p in _independent(beliefs):
        miss *= 1.0 - min(max(p, 0.0), 1.0)
    probability = 1.0 - miss
    believers = [b for b in beliefs if b.probability >= 0.5 and b.time_to_failure_s is not None]
    etas = [b.time_to_failure_s for b in believers if b.time_to_failure_s is not None]
    return Prediction(
        failure_type=failure_type,
        probability=round(probability, 4),
        time_to_failure_s=round(min(etas), 1) if etas else None,
        confidence=round(_confidence(beliefs), 3),
        evidence=[b.evidence for b in sorted(beliefs, key=lambda b: -b.probability)],
        recommended_mitigations=list(RECOMMENDED_MITIGATIONS.get(failure_type, ())),
        horizon_s=horizon_s,
    )


def _independent(beliefs: list[_Belief]) -> list[float]:
    """Return one probability per independent reason: the beliefs read from this host's series
    count as their strongest one, and so do the anomalies (a slowdown is unusual for every
    anomaly detector that watches latency at once)."""
    own: list[float] = []
    odd: list[float] = []
    rest: list[float] = []
    for b in beliefs:
        source = b.evidence.source
        if source.startswith(HOST_SERIES_SOURCES):
            own.append(b.probability)
        else:
            (odd if source.startswith(ANOMALY_SOURCE) else rest).append(b.probability)
    return [max(family) for family in (own, odd) if family] + rest


def _confidence(beliefs: list[_Belief]) -> float:
    """More agreeing sources, more confidence; the pattern model's own figure caps it."""
    sources = {b.evidence.source.split(":")[0] for b in beliefs if b.probability >= 0.3}
    confidence = min(0.35 + 0.2 * len(sources), 0.95)
    model_confidence = [b.confidence for b in beliefs if b.confidence is not None]
    if model_confidence:
        confidence = max(confidence, min(model_confidence))
    return confidence
