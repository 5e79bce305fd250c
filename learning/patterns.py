"""Failure patterns learned from history: which windows of checkpoints came before failures.

For each failure type with enough examples, a gradient-boosted classifier learns the chance
that the failure begins within the horizon (windows where it is already going on are left
out), and a gradient-boosted regressor learns the seconds until it does (from the windows
that came before one). Training data are labelled windows (learning/history.py): from a real
fleet's checkpoints, or from the simulator for the cold start (`cold_start()`).

    model = train(windows, labels, groups=groups, provenance="fleet A, 2026-11")
    predictions = predict(model, window, now)
    blob = dumps(model); model = loads(blob)  # refuses another format or scikit-learn

The trees are compiled into flat arrays after training and walked all at once with numpy:
scikit-learn's own predict costs about 0.5 ms per call for one row, this all types in
about 0.2 ms. Training checks that both give the same scores.

A model carries its card: where its training data came from, how many windows and failures
of each type, and precision and recall on windows of runs it did not train on (whole runs
are held out, so neighbouring windows cannot leak an answer into the evaluation).

Confidence (0-1) is how far to trust a probability: the type's calibration on held-out
windows (1 - expected calibration error) x its support (positive training windows, up to
SUPPORT_FULL) x coverage (the share of its most important features that lie inside the
range seen in training).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numba import njit

from learning.features import FEATURE_NAMES, features
from learning.history import MIN_HISTORY_S, Label, training_set
from learning.hysteresis import OPEN_AT
from learning.prediction import (
    DEFAULT_HORIZON_S,
    FAILURE_TYPES,
    RECOMMENDED_MITIGATIONS,
    Evidence,
    Prediction,
)
from learning.window import Window

# Saved-model format. A model saved with another format is not loaded: retrain.
# 1  2026-11  per-type gradient-boosted classifier and time-to-failure regressor, compiled
#             into one flat forest; card with provenance and held-out figures.
# 2  2026-11  GPU memory features are the fullest GPU's and power a GPU's mean, not sums
#             over the host's GPUs.
MODEL_FORMAT = 2
MAGIC = b"sentinel-patterns"
MIN_EPISODES = 8  # a type seen failing fewer times in training gets no model: no pattern yet
HELD_OUT_SHARE = 0.2
CALIBRATION_FOLDS = 3
REPORT_AT = 0.05  # predictions below this probability are not returned
SUPPORT_FULL = 200  # positive training windows for full support
TOP_FEATURES = 3
COVERAGE_FEATURES = 10
CLASSIFIER: dict[str, Any] = {
    "max_iter": 120, "learning_rate": 0.1, "max_leaf_nodes": 15, "max_depth": 6,
    "min_samples_leaf": 40, "l2_regularization": 1.0, "max_features": 0.5,
    "early_stopping": False,
}  # fmt: skip
REGRESSOR = {**CLASSIFIER, "max_iter": 80}
# The cold start's simulated history; evaluate/run uses other seeds.
COLD_START_SEEDS = (0, 1, 2, 3, 4, 5)
COLD_START_DURATION_S = 1200.0
# Healthy runs last this much longer: a fleet is mostly healthy, and a model that has seen
# too little of that raises false alarms.
COLD_START_HEALTHY_FACTOR = 2.0


# The features that can carry a sign of each failure type. A type's model reads only these
# (and EVERY_TYPE_READS), so it cannot learn a failure from the load level or the model
# served: that would be a pattern of the runs it was trained on, not of the failure. Keys
# match parts of learning.features.FEATURE_NAMES.
_STALL = ("progress", "health", "generation_tokens", "requests_", "gpu_util", "itl", "e2e",
          "errors_worker_timeout", "errors_nccl", "errors_cuda_illegal", "gpu_fault")  # fmt: skip
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "kv_cache_exhausted": ("kv_cache", "requests_", "preemptions", "tokens_per_s", "ttft", "itl",
                           "queue", "errors_kv_cache_exhausted"),
    "cuda_oom": ("gpu_mem", "kv_cache", "requests_running"),
    "thermal_throttling": ("gpu_temp", "thermal", "gpu_power", "sm_clock", "throttled",
                           "gpu_util"),
    "hang": _STALL,
    "nccl_error": _STALL,
    "engine_dead": _STALL,
    "gpu_hardware": ("gpu_fault", "errors_cuda_illegal", "progress", "gpu_util", "health"),
    "system_resource": ("process_", "errors_system_resource", "failed_per_s", "5xx"),
    "performance_degradation": ("itl", "ttft", "e2e", "queue", "generation_tokens", "sm_clock"),
}  # fmt: skip
EVERY_TYPE_READS = ("state_", "age_s")


@dataclass
class _Head:
    kind: str  # "classifier" or "regressor"
    estimator: Any
    columns: np.ndarray  # the feature indices it was fitted on


class ModelError(ValueError):
    """A saved pattern model this code will not load; the message says why (retrain)."""


@dataclass
class Forest:
    """Every tree of every head (a type's classifier or regressor) as flat arrays."""

    feature: np.ndarray  # per node
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray
    value: np.ndarray
    roots: np.ndarray  # per tree
    head: np.ndarray  # per tree: which head it adds to
    baseline: np.ndarray  # per head

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Return each head's raw score for one feature vector (log-odds or seconds)."""
        return _raw(np.ascontiguousarray(x, dtype=np.float64), self.feature, self.threshold,
                    self.missing_left, self.left, self.right, self.leaf, self.value,
                    self.roots, self.head, self.baseline)  # fmt: skip


# Compiled by numba: the trees walked one by one cost about a tenth of numpy's walk of all of
# them level by level, whose time was its calls' own overhead.
@njit(cache=True)
def _raw(
    x: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    missing_left: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    leaf: np.ndarray,
    value: np.ndarray,
    roots: np.ndarray,
    head: np.ndarray,
    baseline: np.ndarray,
) -> np.ndarray:
    summed = np.zeros(len(baseline))
    for tree in range(len(roots)):
        node = roots[tree]
        while not leaf[node]:
            v = x[feature[node]]
            go_left = missing_left[node] if math.isnan(v) else v <= threshold[node]
            node = left[node] if go_left else right[node]
        summed[head[tree]] += value[node]
    return baseline + summed


@dataclass
class TypeModel:
    failure_type: str
    classifier_head: int
    regressor_head: int | None
    positives: int  # positive training windows
    importance: np.ndarray  # split gain per feature, summing to 1
    calibration: float  # 1 - expected calibration error on held-out windows
    scale: float  # Platt scaling of the raw score: p = sigmoid(scale * raw + shift)
    shift: float
    held_out: dict[str, float] = field(default_factory=dict)

    @cached_property
    def coverage(self) -> np.ndarray:
        """The COVERAGE_FEATURES features this type relies on most (derived, not saved)."""
        return np.argpartition(self.importance, -COVERAGE_FEATURES)[-COVERAGE_FEATURES:]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "coverage"}

    def probability(self, raw: np.ndarray | float) -> Any:
        """Return the calibrated probability of the classifier's raw score(s)."""
        return _sigmoid(self.scale * np.asarray(raw, dtype=float) + self.shift)


@dataclass
class PatternModel:
    version: int
    model_format: int
    sklearn_version: str
    feature_names: tuple[str, ...]
    horizon_s: float
    types: dict[str, TypeModel]
    forest: Forest
    typical: np.ndarray  # per feature: median over training windows with nothing ahead
    spread: np.ndarray  # per feature: their interquartile range (a floor keeps it > 0)
    low: np.ndarray  # per feature: 1st and 99th percentiles of all training windows
    high: np.ndarray
    card: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def calibrations(self) -> tuple[list[TypeModel], np.ndarray, np.ndarray, np.ndarray]:
        """Every type model with its classifier's head, scale and shift, as arrays that
        calibrate all of them at once (derived, not saved)."""
        types = list(self.types.values())
        return (
            types,
            np.array([tm.classifier_head for tm in types], dtype=np.int64),
            np.array([tm.scale for tm in types]),
            np.array([tm.shift for tm in types]),
        )

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "calibrations"}


# ---------------------------------------------------------------- training


def train(windows: Sequence[Window], labels: Sequence[Label], **options: Any) -> PatternModel:
    """Return a model trained on `windows` and their `labels`: train_rows (and its `options`)
    on each window's features as of its newest checkpoint; the card's training time counts
    the features too."""
    started = time.perf_counter()
    x = np.vstack([features(w, float(w.t[-1])) for w in windows])
    model = train_rows(x, [float(w.t[-1]) for w in windows], labels, **options)
    model.card["training_s"] = round(time.perf_counter() - started, 1)
    return model


def train_rows(
    x: np.ndarray,
    ends: Sequence[float],
    labels: Sequence[Label],
    *,
    groups: Sequence[str] | None = None,
    horizon_s: float = DEFAULT_HORIZON_S,
    provenance: str = "",
    version: int = 1,
    seed: int = 0,
    min_episodes: int = MIN_EPISODES,
) -> PatternModel:
    """Return a model trained on windows' feature rows `x` (learning.features), the times
    they end at and their `labels`, evaluated on held-out runs.

    1. Whole runs (`groups`, named "stratum/run", e.g. "memory_leak_oom/7") are held out,
       HELD_OUT_SHARE of each stratum, so every kind of run is in the evaluation.
    2. Per failure type seen failing `min_episodes` times: a classifier on the type's features,
       calibrated on out-of-fold scores (CALIBRATION_FOLDS folds of whole runs, isotonic),
       and a regressor of the seconds to failure.
    3. The trees are compiled (and checked against scikit-learn), the held-out figures and
       the provenance go on the card.
    """
    import sklearn

    started = time.perf_counter()
    names = list(groups) if groups is not None else [f"window/{i}" for i in range(len(x))]
    held = _held_out(names, seed)
    episodes = _episode_keys(ends, labels, names)
    folds = _folds(names, held, seed)
    heads, type_models, skipped = _fit_types(x, labels, folds, episodes, seed, min_episodes)
    forest = _compile(heads)
    _check_compiled(forest, heads, x[~held][:200])
    train_labels = [labels[i] for i in np.flatnonzero(~held).tolist()]
    typical, spread, low, high = _feature_ranges(x[~held], train_labels)
    model = PatternModel(
        version=version,
        model_format=MODEL_FORMAT,
        sklearn_version=sklearn.__version__,
        feature_names=FEATURE_NAMES,
        horizon_s=horizon_s,
        types=type_models,
        forest=forest,
        typical=typical,
        spread=spread,
        low=low,
        high=high,
    )
    _evaluate_held_out(model, x[held], [labels[i] for i in np.flatnonzero(held).tolist()])
    model.card = _card(
        model, labels, names, held, skipped, provenance, time.perf_counter() - started
    )
    return model


def _held_out(groups: list[str], seed: int) -> np.ndarray:
    """Return a mask of the windows whose run is held out: a share of each stratum's runs."""
    strata: dict[str, list[str]] = {}
    for g in dict.fromkeys(groups):
        strata.setdefault(g.split("/", 1)[0], []).append(g)
    rng = random.Random(seed)
    held: set[str] = set()
    for runs in strata.values():
        count = round(len(runs) * HELD_OUT_SHARE)
        if len(runs) >= 2:
            held.update(rng.sample(runs, max(1, count)))
    return np.array([g in held for g in groups])


def _folds(groups: list[str], held: np.ndarray, seed: int) -> np.ndarray:
    """Return each window's calibration fold (-1: held out); a run's windows share one, and
    each stratum's runs are dealt round the folds."""
    strata: dict[str, list[str]] = {}
    for g, h in dict.fromkeys(zip(groups, held.tolist(), strict=True)):
        if not h:
            strata.setdefault(g.split("/", 1)[0], []).append(g)
    rng = random.Random(seed + 1)
    fold_of: dict[str, int] = {}
    dealt = 0
    for runs in strata.values():
        rng.shuffle(runs)
        for g in runs:
            fold_of[g] = dealt % CALIBRATION_FOLDS
            dealt += 1
    return np.array([fold_of.get(g, -1) for g in groups])


def _fit_types(
    x: np.ndarray,
    labels: Sequence[Label],
    folds: np.ndarray,
    episodes: dict[str, np.ndarray],
    seed: int,
    min_episodes: int,
) -> tuple[list[_Head], dict[str, TypeModel], dict[str, str]]:
    """Fit each type's classifier and regressor on its features; return the heads, the type
    models, and why the other types have none."""
    heads: list[_Head] = []
    types: dict[str, TypeModel] = {}
    skipped: dict[str, str] = {}
    for failure_type in FAILURE_TYPES:
        usable = np.array([failure_type not in lb.ongoing for lb in labels]) & (folds >= 0)
        ttf = np.array([lb.time_to_failure_s.get(failure_type, math.nan) for lb in labels])
        positive = ~np.isnan(ttf)
        positives = int(np.count_nonzero(positive & usable))
        seen = len(set(episodes[failure_type][usable & positive].tolist()))
        if seen < min_episodes or positives == int(np.count_nonzero(usable)):
            skipped[failure_type] = f"{seen} failures in the training runs (< {min_episodes})"
            continue
        cols = feature_columns(failure_type)
        classifier = _classifier(x[usable][:, cols], positive[usable], seed)
        heads.append(_Head("classifier", classifier, cols))
        before = usable & positive
        heads.append(_Head("regressor", _regressor(x[before][:, cols], ttf[before], seed), cols))
        importance = _importance(classifier, cols)
        scale, shift = _platt(x[:, cols], positive, usable, folds, seed)
        types[failure_type] = TypeModel(
            failure_type, len(heads) - 2, len(heads) - 1, positives, importance, 0.5, scale, shift
        )
    return heads, types, skipped


def _platt(
    x: np.ndarray, y: np.ndarray, usable: np.ndarray, folds: np.ndarray, seed: int
) -> tuple[float, float]:
    """Return the Platt scaling (scale, shift) of raw scores, fitted on out-of-fold scores:
    each fold scored by a classifier that did not see its runs. Trees fitted to a few runs
    are overconfident; this brings a score back to how often it came true elsewhere. Two
    numbers, not a curve: a few dozen failures cannot support more."""
    from sklearn.linear_model import LogisticRegression

    scores = np.full(len(y), math.nan)
    for k in range(CALIBRATION_FOLDS):
        fit, score = usable & (folds != k), usable & (folds == k)
        if score.any() and 0 < np.count_nonzero(y[fit]) < np.count_nonzero(fit):
            scores[score] = _classifier(x[fit], y[fit], seed).decision_function(x[score])
    known = ~np.isnan(scores)
    if len(set(y[known].tolist())) < 2:
        return 1.0, 0.0
    platt = LogisticRegression(C=1e4).fit(scores[known, None], y[known])
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


def feature_columns(failure_type: str) -> np.ndarray:
    """Return the indices of the features a failure type's model reads (FEATURE_GROUPS)."""
    keys = (*FEATURE_GROUPS.get(failure_type, ("",)), *EVERY_TYPE_READS)
    return np.array([i for i, n in enumerate(FEATURE_NAMES) if any(k in n for k in keys)])


def _episode_keys(
    ends: Sequence[float], labels: Sequence[Label], groups: list[str]
) -> dict[str, np.ndarray]:
    """Return, per failure type and window, which failure it came before ("" if none), so
    that failures, not windows, can be counted."""
    keys: dict[str, np.ndarray] = {}
    for failure_type in FAILURE_TYPES:
        found = []
        for end, lb, g in zip(ends, labels, groups, strict=True):
            wait = lb.time_to_failure_s.get(failure_type)
            found.append("" if wait is None else f"{g}@{round(end + wait)}")
        keys[failure_type] = np.array(found, dtype=object)
    return keys


def _classifier(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(**CLASSIFIER, random_state=seed).fit(_fittable(x), y)


def _regressor(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(**REGRESSOR, random_state=seed).fit(_fittable(x), y)


def _fittable(x: np.ndarray) -> np.ndarray:
    """Return `x` with its all-NaN columns zeroed: scikit-learn's binning fails on them, and
    a constant column is never split on, so predictions are the same."""
    empty = np.isnan(x).all(axis=0)
    return np.where(empty, 0.0, x) if empty.any() else x


def _importance(estimator: Any, cols: np.ndarray) -> np.ndarray:
    """Return the split gain of each feature over all the estimator's trees, summing to 1."""
    gain = np.zeros(len(FEATURE_NAMES))
    for (tree,) in estimator._predictors:
        nodes = tree.nodes[tree.nodes["is_leaf"] == 0]
        np.add.at(gain, cols[nodes["feature_idx"]], np.maximum(nodes["gain"], 0.0))
    total = gain.sum()
    return gain / total if total > 0 else gain


def _compile(heads: list[_Head]) -> Forest:
    """Return every tree of `heads` (one head each) as one Forest over the full features."""
    chunks, roots, tree_heads, offset = [], [], [], 0
    for index, head in enumerate(heads):
        for (tree,) in head.estimator._predictors:
            chunks.append((tree.nodes, offset, head.columns))
            roots.append(offset)
            tree_heads.append(index)
            offset += len(tree.nodes)
    if not chunks:
        return _empty_forest()
    nodes = np.concatenate([n for n, _, _ in chunks])
    shift = np.concatenate([np.full(len(n), o, dtype=np.int64) for n, o, _ in chunks])
    feature = np.concatenate([cols[n["feature_idx"]] for n, _, cols in chunks])
    return Forest(
        feature=feature.astype(np.int64),
        threshold=nodes["num_threshold"].astype(np.float64),
        missing_left=nodes["missing_go_to_left"].astype(bool),
        left=nodes["left"].astype(np.int64) + shift,
        right=nodes["right"].astype(np.int64) + shift,
        leaf=nodes["is_leaf"].astype(bool),
        value=nodes["value"].astype(np.float64),
        roots=np.array(roots, dtype=np.int64),
        head=np.array(tree_heads, dtype=np.int64),
        baseline=np.array([float(np.ravel(h.estimator._baseline_prediction)[0]) for h in heads]),
    )


def _empty_forest() -> Forest:
    ints, floats, flags = np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool)
    return Forest(ints, floats, flags, ints, ints, flags, floats, ints, ints, floats)


def _check_compiled(forest: Forest, heads: list[_Head], x: np.ndarray) -> None:
    """Raise if the compiled forest and scikit-learn disagree (its tree layout changed)."""
    if not heads or len(x) == 0:
        return
    ours = np.vstack([forest.raw(row) for row in x])
    for index, head in enumerate(heads):
        part = x[:, head.columns]
        if head.kind == "classifier":
            theirs = head.estimator.decision_function(part)
        else:
            theirs = head.estimator.predict(part)
        if not np.allclose(ours[:, index], theirs, rtol=1e-6, atol=1e-6):
            raise RuntimeError("the compiled trees disagree with scikit-learn's; cannot train")


def _feature_ranges(
    x: np.ndarray, labels: Sequence[Label]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the typical value and spread of each feature in windows with nothing ahead,
    and the 1st and 99th percentiles over all windows."""
    quiet = np.array([not lb.time_to_failure_s and not lb.ongoing for lb in labels], dtype=bool)
    calm = x[quiet] if quiet.any() else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a figure a fleet never reports
        q25, typical, q75 = np.nanpercentile(calm, [25, 50, 75], axis=0)
        low, high = np.nanpercentile(x, [1, 99], axis=0)
    spread = np.maximum(
        np.nan_to_num(q75 - q25), 1e-3 * np.maximum(np.abs(np.nan_to_num(typical)), 1.0)
    )
    return typical, spread, low, high


def cold_start(
    *,
    seeds: Sequence[int] = COLD_START_SEEDS,
    duration_s: float = COLD_START_DURATION_S,
    horizon_s: float = DEFAULT_HORIZON_S,
    workers: int = 1,
) -> PatternModel:
    """Return a model trained on simulator history, for a fleet with none of its own yet.

    Every failure scenario and the healthy ones run with each seed (varied numbers, the real
    agent); the labels come from the checkpoints, as they would on a real fleet. The card
    names the scenarios and seeds.
    """
    from simulator.history import FAILURE_SCENARIOS, HEALTHY_SCENARIOS, simulate_many

    scenarios = [*FAILURE_SCENARIOS, *HEALTHY_SCENARIOS]
    runs = simulate_many(list(FAILURE_SCENARIOS), list(seeds), duration_s, workers=workers)
    healthy_s = duration_s * COLD_START_HEALTHY_FACTOR
    runs += simulate_many(list(HEALTHY_SCENARIOS), list(seeds), healthy_s, workers=workers)
    windows, labels, groups = training_set(
        [(run.group, run.checkpoints) for run in runs], horizon_s=horizon_s
    )
    provenance = (
        f"simulator scenarios {', '.join(scenarios)}; seeds {', '.join(map(str, seeds))}; "
        f"{duration_s:g} simulated s each ({healthy_s:g} s healthy), numbers varied per seed; "
        "labels from the checkpoints"
    )
    model = train(windows, labels, groups=groups, horizon_s=horizon_s, provenance=provenance)
    model.card["trained_on"] = "simulator history (cold start)"
    return model


# ---------------------------------------------------------------- held-out figures


def _evaluate_held_out(model: PatternModel, x: np.ndarray, labels: Sequence[Label]) -> None:
    """Put each type's held-out precision, recall and calibration on its TypeModel."""
    if len(x) == 0:
        return
    raw = np.vstack([model.forest.raw(row) for row in x])
    for failure_type, tm in model.types.items():
        usable = np.array([failure_type not in lb.ongoing for lb in labels])
        ttf = np.array([lb.time_to_failure_s.get(failure_type, math.nan) for lb in labels])
        y = ~np.isnan(ttf[usable])
        p = tm.probability(raw[usable, tm.classifier_head])
        tm.held_out = _classification_figures(y, p)
        if tm.regressor_head is not None and y.any():
            predicted = np.clip(raw[usable, tm.regressor_head][y], 0.0, model.horizon_s)
            tm.held_out["ttf_mae_s"] = round(float(np.mean(np.abs(predicted - ttf[usable][y]))), 1)
        if y.any():
            tm.calibration = round(1.0 - tm.held_out["calibration_error"], 3)


def _classification_figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    alarm = p >= OPEN_AT
    hits = int(np.count_nonzero(alarm & y))
    return {
        "windows": len(y),
        "positives": int(np.count_nonzero(y)),
        "precision": round(hits / int(np.count_nonzero(alarm)), 3) if alarm.any() else math.nan,
        "recall": round(hits / int(np.count_nonzero(y)), 3) if y.any() else math.nan,
        "calibration_error": round(_calibration_error(y, p), 3),
    }


def _calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Return the expected calibration error: |mean p - hit rate| per bin, weighted by size."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return float(error)


def _card(
    model: PatternModel,
    labels: Sequence[Label],
    groups: list[str],
    held: np.ndarray,
    skipped: dict[str, str],
    provenance: str,
    seconds: float,
) -> dict[str, Any]:
    return {
        "kind": "patterns",
        "training_s": round(seconds, 1),
        "provenance": provenance or "unspecified",
        "trained_on": provenance or "unspecified",  # in a word, for each prediction's evidence
        "windows": len(labels),
        "runs": len(set(groups)),
        "held_out_runs": sorted({g for g, h in zip(groups, held, strict=True) if h}),
        "horizon_s": model.horizon_s,
        "alarm_at": OPEN_AT,
        "types": {
            t: {"training_positives": tm.positives, "held_out": tm.held_out}
            for t, tm in model.types.items()
        },
        "not_learned": skipped,
    }


# ---------------------------------------------------------------- prediction


def predict(
    model: PatternModel, window: Window, now: float, *, explain: bool = True
) -> list[Prediction]:
    """Return the model's predictions for `window` as of `now`, likeliest first; types below
    REPORT_AT are left out, and a window shorter than MIN_HISTORY_S gets none. With
    `explain=False` the evidence is the model's own line only, without the unusual features
    (learning.predict keeps only that line: it costs a fifth of a prediction to write)."""
    if len(window) < 2 or window.t[-1] - window.t[0] < MIN_HISTORY_S or not model.types:
        return []
    x = features(window, now)
    x[~np.isfinite(x)] = math.nan
    raw = model.forest.raw(x)
    types, heads, scales, shifts = model.calibrations
    probabilities = _sigmoid(scales * raw[heads] + shifts).tolist()  # as tm.probability, at once
    found = [
        _prediction(model, tm, x, raw, p, explain)
        for tm, p in zip(types, probabilities, strict=True)
        if p >= REPORT_AT
    ]
    return sorted(found, key=lambda pr: -pr.probability)


def _prediction(
    model: PatternModel, tm: TypeModel, x: np.ndarray, raw: np.ndarray, p: float, explain: bool
) -> Prediction:
    ttf = None
    if tm.regressor_head is not None:
        ttf = round(min(max(float(raw[tm.regressor_head]), 0.0), model.horizon_s), 1)
    return Prediction(
        failure_type=tm.failure_type,
        probability=round(p, 4),
        time_to_failure_s=ttf,
        confidence=_confidence(model, tm, x),
        evidence=_evidence(model, tm, x, p, explain),
        recommended_mitigations=list(RECOMMENDED_MITIGATIONS.get(tm.failure_type, ())),
        horizon_s=model.horizon_s,
    )


def _confidence(model: PatternModel, tm: TypeModel, x: np.ndarray) -> float:
    top = tm.coverage
    values, low, high = x[top], model.low[top], model.high[top]
    inside = np.isnan(values) | np.isnan(low) | ((values >= low) & (values <= high))
    support = min(1.0, tm.positives / SUPPORT_FULL)
    return round(tm.calibration * support * float(inside.mean()), 3)


def _evidence(
    model: PatternModel, tm: TypeModel, x: np.ndarray, p: float, explain: bool
) -> list[Evidence]:
    source = f"pattern:v{model.version}"
    minutes = model.horizon_s / 60
    trained_on = model.card.get("trained_on") or model.card.get("provenance", "unspecified")
    found = [
        Evidence(
            source,
            f"learned pattern (model v{model.version}, trained on {trained_on}): "
            f"{p:.0%} chance of {tm.failure_type} within {minutes:g} min",
            round(p, 4),
        )
    ]
    if not explain:
        return found
    with np.errstate(invalid="ignore"):
        unusual = tm.importance * np.abs(x - model.typical) / model.spread
    unusual = np.nan_to_num(unusual, nan=0.0)
    top = np.argpartition(unusual, -TOP_FEATURES)[-TOP_FEATURES:]
    for i in top[np.argsort(unusual[top])[::-1]]:
        if unusual[i] <= 0:
            break
        name = model.feature_names[i]
        detail = f"{name} is {x[i]:.3g} (typical with no failure ahead: {model.typical[i]:.3g})"
        found.append(Evidence(source, detail, round(float(x[i]), 6)))
    return found


def _sigmoid(raw: np.ndarray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(raw, dtype=float)))


# ---------------------------------------------------------------- saving


def dumps(model: PatternModel) -> bytes:
    """Return the model as bytes: a JSON header line (format, scikit-learn version), then it."""
    header = {"model_format": model.model_format, "sklearn_version": model.sklearn_version,
              "version": model.version}  # fmt: skip
    buffer = io.BytesIO()
    buffer.write(MAGIC + b" " + json.dumps(header).encode() + b"\n")
    pickle.dump(model, buffer, protocol=5)
    return buffer.getvalue()


def loads(data: bytes) -> PatternModel:
    """Return the model saved in `data`; raise ModelError if it has another MODEL_FORMAT or
    was trained with another scikit-learn version (the caller retrains)."""
    import sklearn

    first, _, body = data.partition(b"\n")
    if not first.startswith(MAGIC + b" "):
        raise ModelError("not a saved pattern model")
    try:
        header = json.loads(first[len(MAGIC) + 1 :])
    except ValueError:
        raise ModelError("the saved pattern model's header is unreadable") from None
    if header.get("model_format") != MODEL_FORMAT:
        raise ModelError(
            f"pattern model format {header.get('model_format')!r}, this code reads "
            f"{MODEL_FORMAT}: retrain"
        )
    if header.get("sklearn_version") != sklearn.__version__:
        raise ModelError(
            f"pattern model trained with scikit-learn {header.get('sklearn_version')}, "
            f"this is {sklearn.__version__}: retrain"
        )
    try:
        model = pickle.loads(body)
    except Exception as exc:  # a truncated or damaged body fails in many ways
        raise ModelError(f"the saved pattern model is unreadable ({exc!r:.100}): retrain") from None
    if not isinstance(model, PatternModel) or model.model_format != MODEL_FORMAT:
        raise ModelError("the saved pattern model does not match its header: retrain")
    return model
