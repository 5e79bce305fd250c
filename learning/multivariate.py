"""Multivariate anomaly score of a host's newest checkpoint against its healthy history. Pure.

An isolation forest (scikit-learn) learns what a host's (or a fleet's) serving checkpoints
look like together: levels (KV cache, queue, GPU memory, latency, throughput, ...), ratios that
normalise by load (ITL p99 per running request, KV % per running request, waiting per running
request, tokens/s per running request) and rates of change (KV %/s, GPU memory %/s, RSS/s).
A checkpoint whose combination is rare scores high even when no single figure crosses a
guardrail, e.g. a normal ITL at half the usual load.

1. `fit(windows)`: feature rows of every serving checkpoint; each feature is centred on its
   median and scaled by its robust spread (missing values become the median); the forest is
   fitted and its trees are packed into flat arrays, so scoring needs no scikit-learn call
   (whose per-call overhead is milliseconds).
2. `score(model, window)`: the newest checkpoint's features and two measures of how rare
   they are among the healthy training rows: the forest's score (mean path length over the
   packed trees, walked by a compiled loop), which sees unusual combinations, and the largest
   robust z of any one feature over that feature's own usual extreme, which keeps growing
   where the forest saturates (a figure far outside anything seen). The likelihood is the
   larger of the two shares of healthy rows that were less anomalous. `contributions` name
   the features furthest beyond their usual extremes, in robust standard deviations, for the
   evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from learning.prediction import Evidence
from learning.window import Row, Window

# MODEL_FORMAT history:
# 1: isolation forest over LEVELS + ratios + rates, packed trees, robust centring.
MODEL_FORMAT = 1

ALARM_LIKELIHOOD = 0.995  # rarer than 199 in 200 healthy checkpoints
TREES = 100
MAX_SAMPLES = 256
TOP_CONTRIBUTIONS = 3
# A figure is judged against its own usual extreme, so that a feature with heavy tails (TTFT
# p99 jumps 40 robust SDs on a healthy host) does not set the bar for all: against the
# largest z of any feature, a GPU 20 SDs hotter than usual had scored 0.95.
EXTREME_QUANTILE = 0.999
NEVER_MOVED_Z = 1000.0  # farther than this, a feature's scale is the one for constant features
QUANTILES = 1001  # healthy scores kept, as quantiles, to turn a score into a likelihood

LEVELS = (
    "kv_cache_usage_pct",
    "requests_running",
    "requests_waiting",
    "gpu_mem_used_pct",
    "gpu_util_pct",
    "gpu_temp_c",
    "gpu_power_w",
    "gpu_sm_clock_mhz",
    "prompt_tokens_per_s",
    "generation_tokens_per_s",
    "preemptions_per_s",
    "requests_failed_per_s",
    "ttft_p99_s",
    "itl_p99_s",
    "e2e_p99_s",
    "queue_p99_s",
    "process_rss_bytes",
    "process_open_fds",
)
# name -> (numerator series, denominator series): figures normalised by load.
RATIOS = {
    "itl_p99_s_per_running": ("itl_p99_s", "requests_running"),
    "kv_cache_usage_pct_per_running": ("kv_cache_usage_pct", "requests_running"),
    "waiting_per_running": ("requests_waiting", "requests_running"),
    "generation_tokens_per_s_per_running": ("generation_tokens_per_s", "requests_running"),
}
# name -> series whose change per second since the previous checkpoint is a feature.
RATES = {
    "kv_cache_usage_pct_per_s": "kv_cache_usage_pct",
    "gpu_mem_used_pct_per_s": "gpu_mem_used_pct",
    "process_rss_bytes_per_s": "process_rss_bytes",
}
FEATURES = (*LEVELS, *RATIOS, *RATES)


@dataclass
class Model:
    """A fitted forest with what scoring needs; plain arrays, so it pickles small."""

    features: list[str]  # the FEATURES that had data in training, in column order
    columns: np.ndarray  # their indices in FEATURES
    medians: np.ndarray
    scales: np.ndarray
    left: np.ndarray  # packed trees: global node index of each node's children
    right: np.ndarray
    split_feature: np.ndarray
    split_value: np.ndarray
    leaf_depth: np.ndarray  # path length credited at a leaf (depth + c(leaf size))
    roots: np.ndarray
    normaliser: float  # c(max_samples)
    healthy: np.ndarray  # quantiles of the training rows' forest scores
    extremes: np.ndarray  # each feature's usual extreme: its training rows' 99.9th |z| (>= 1)
    healthy_z: np.ndarray  # quantiles of the training rows' largest |z| over its extreme
    rows: int
    sklearn_version: str
    model_format: int = MODEL_FORMAT


@dataclass
class Score:
    likelihood: float  # share of healthy checkpoints less anomalous than this one, 0-1
    raw: float  # isolation forest anomaly score, 0-1 (0.5 and up is unusual)
    contributions: list[tuple[str, float]] = field(default_factory=list)  # name, robust z

    @property
    def alarm(self) -> bool:
        return self.likelihood >= ALARM_LIKELIHOOD


def feature_rows(window: Window) -> np.ndarray:
    """Return one row of FEATURES per checkpoint of `window` (NaN where missing)."""
    columns = [window[name] for name in LEVELS]
    columns += [_ratio(window[a], window[b]) for a, b in RATIOS.values()]
    columns += [_per_s(window[name], window.t) for name in RATES.values()]
    return np.column_stack(columns) if len(window) else np.empty((0, len(FEATURES)))


def newest_features(window: Window) -> np.ndarray:
    """Return FEATURES of the newest checkpoint only (what `score` needs, without the rest)."""
    tail = Window(window.t[-2:], {name: values[-2:] for name, values in window.series.items()},
                  window.states[-2:])  # fmt: skip
    return np.asarray(feature_rows(tail)[-1])


def row_features(previous: Row, newest: Row) -> np.ndarray:
    """Return FEATURES of the `newest` row, its rates of change since `previous`: what
    feature_rows gives for the newest of the two, read off the rows without building a window
    (a host's analyzer does it on every checkpoint; through a window it cost 60 us, this 9)."""
    last = [newest.value(name) for name in LEVELS]
    last += [newest.value(a) / max(newest.value(b), 1.0) for a, b in RATIOS.values()]
    dt = newest.t - previous.t
    last += [(newest.value(n) - previous.value(n)) / dt if dt > 0 else math.nan
             for n in RATES.values()]  # fmt: skip
    return np.array(last)


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    # Idle hosts count as one running request, so ratios stay finite and meaningful.
    return np.asarray(top / np.maximum(bottom, 1.0), dtype=float)


def _per_s(values: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = np.full(len(values), math.nan)
    if len(values) > 1:
        dt = np.diff(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[1:] = np.where(dt > 0, np.diff(values) / dt, math.nan)
    return out


def fit(windows: Sequence[Window], seed: int = 0) -> Model:
    """Return a model of the serving checkpoints in `windows` (one host's or a fleet's)."""
    return fit_rows(_healthy_rows(windows), seed)


def fit_rows(rows: np.ndarray, seed: int = 0) -> Model:
    """Return a model of `rows` (one row of FEATURES per serving checkpoint)."""
    from sklearn import __version__ as sklearn_version
    from sklearn.ensemble import IsolationForest

    columns = np.flatnonzero(~np.all(np.isnan(rows), axis=0)) if len(rows) else np.array([], int)
    if len(rows) < 2 or not len(columns):
        raise ValueError("fit needs at least two serving checkpoints with data")
    x = rows[:, columns]
    medians = np.nanmedian(x, axis=0)
    scales = _robust_scales(x, medians)
    z = _standardise(x, medians, scales)
    forest = IsolationForest(
        n_estimators=TREES, max_samples=min(MAX_SAMPLES, len(z)), random_state=seed
    )
    forest.fit(z)
    packed = _pack(forest)
    model = Model(
        features=[FEATURES[i] for i in columns],
        columns=columns,
        medians=medians,
        scales=scales,
        sklearn_version=sklearn_version,
        rows=len(z),
        healthy=np.empty(0),
        extremes=np.maximum(np.quantile(np.abs(z), EXTREME_QUANTILE, axis=0), 1.0),
        healthy_z=np.empty(0),
        **packed,
    )
    levels = np.linspace(0.0, 1.0, QUANTILES)
    model.healthy = np.quantile(_raw_scores(model, z), levels)
    model.healthy_z = np.quantile((np.abs(z) / model.extremes).max(axis=1), levels)
    return model


def _healthy_rows(windows: Sequence[Window]) -> np.ndarray:
    parts = []
    for window in windows:
        rows = feature_rows(window)
        serving = np.array([s == "serving" for s in window.states], dtype=bool)
        parts.append(rows[serving] if serving.any() else rows)
    return np.vstack(parts) if parts else np.empty((0, len(FEATURES)))


def _robust_scales(x: np.ndarray, medians: np.ndarray) -> np.ndarray:
    # Median absolute deviation as a standard deviation. A feature that is mostly one value
    # (failed requests and preemptions: 0 but now and then) has none: its mean absolute
    # deviation stands in, or a spike it has shown before would be 10^8 of them away and no
    # other figure could ever look unusual beside it. Only a feature that never moved gets a
    # scale from its magnitude, so any change of it still stands out.
    deviation = np.abs(x - medians)
    mad = 1.4826 * np.nanmedian(deviation, axis=0)
    mean_deviation = 1.2533 * np.nanmean(deviation, axis=0)
    fallback = np.maximum(np.abs(medians) * 0.01, 1e-9)
    scale = np.where(np.isfinite(mad) & (mad > 0), mad, mean_deviation)
    return np.where(
        np.isfinite(scale) & (scale > 0), scale, np.where(np.isfinite(fallback), fallback, 1.0)
    )


def _standardise(x: np.ndarray, medians: np.ndarray, scales: np.ndarray) -> np.ndarray:
    medians = np.where(np.isfinite(medians), medians, 0.0)
    z = (x - medians) / scales
    return np.where(np.isfinite(z), z, 0.0)


def _pack(forest: Any) -> dict[str, Any]:
    """Return the forest's trees as flat arrays; a leaf points to itself on both sides."""
    lefts, rights, features, values, leaf_depths, roots = [], [], [], [], [], []
    offset = 0
    for tree, used in zip(forest.estimators_, forest.estimators_features_, strict=True):
        t = tree.tree_
        n = t.node_count
        is_leaf = t.children_left < 0
        own = np.arange(n) + offset
        lefts.append(np.where(is_leaf, own, t.children_left + offset))
        rights.append(np.where(is_leaf, own, t.children_right + offset))
        features.append(np.where(is_leaf, 0, np.asarray(used)[np.maximum(t.feature, 0)]))
        values.append(np.where(is_leaf, np.inf, t.threshold))
        node_depth = _node_depths(t.children_left, t.children_right)
        leaf_depths.append(node_depth + _average_path(t.n_node_samples.astype(float)))
        roots.append(offset)
        offset += n
    return {
        "left": np.concatenate(lefts),
        "right": np.concatenate(rights),
        "split_feature": np.concatenate(features),
        "split_value": np.concatenate(values),
        "leaf_depth": np.concatenate(leaf_depths),
        "roots": np.array(roots),
        "normaliser": float(_average_path(np.array([float(forest.max_samples_)]))[0]),
    }


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(left), dtype=float)
    for node in range(len(left)):  # children always come after their parent
        for child in (left[node], right[node]):
            if child >= 0:
                depth[child] = depth[node] + 1
    return depth


def _average_path(n: np.ndarray) -> np.ndarray:
    """c(n): the mean path length of an unsuccessful search in a binary tree of n points."""
    harmonic = np.log(np.maximum(n - 1.0, 1.0)) + np.euler_gamma
    c = 2.0 * harmonic - 2.0 * (n - 1.0) / np.maximum(n, 1.0)
    return np.where(n > 2, c, np.where(n == 2, 1.0, 0.0))


def _raw_scores(model: Model, z: np.ndarray) -> np.ndarray:
    """Return the isolation forest score of each standardised row."""
    mean_path = _mean_paths(np.ascontiguousarray(z, dtype=np.float64), model.roots, model.left,
                            model.right, model.split_feature, model.split_value,
                            model.leaf_depth)  # fmt: skip
    return np.asarray(2.0 ** (-mean_path / model.normaliser))


# Compiled: walking the trees in numpy (all at once, a level per step) cost 0.14 ms a row, most
# of it numpy's per-call overhead on a hundred nodes; a loop costs a few microseconds.
@njit(cache=True)
def _mean_paths(
    z: np.ndarray,
    roots: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    split_feature: np.ndarray,
    split_value: np.ndarray,
    leaf_depth: np.ndarray,
) -> np.ndarray:
    """Return each row's path length through the packed trees, averaged over them."""
    out = np.empty(z.shape[0])
    for i in range(z.shape[0]):
        total = 0.0
        for root in roots:
            node = root
            while left[node] != node:  # a leaf points to itself
                node = left[node] if z[i, split_feature[node]] <= split_value[node] else right[node]
            total += leaf_depth[node]
        out[i] = total / len(roots)
    return out


def score(model: Model, window: Window) -> Score:
    """Return how anomalous the newest checkpoint of `window` is, and the features why."""
    return score_features(model, newest_features(window))


def score_features(model: Model, features: np.ndarray) -> Score:
    """Return how anomalous a checkpoint with these FEATURES is, and the features why."""
    x = features[model.columns]
    z = _standardise(x[None, :], model.medians, model.scales)
    raw = float(_raw_scores(model, z)[0])
    beyond = np.abs(z[0]) / model.extremes  # each figure against its own usual extreme
    largest_z = float(beyond.max())
    below = max(
        np.searchsorted(model.healthy, raw, side="left"),
        np.searchsorted(model.healthy_z, largest_z, side="left"),
    )
    likelihood = float(below) / (QUANTILES - 1)
    order = np.argsort(-beyond)[:TOP_CONTRIBUTIONS]
    contributions = [(model.features[i], round(float(z[0][i]), 2)) for i in order if z[0][i] != 0]
    return Score(min(likelihood, 1.0), raw, contributions)


def evidence(result: Score) -> list[Evidence]:
    """Return the contributions of `result` as sentences an operator can read."""
    return [
        Evidence(source="anomaly:multivariate", detail=_deviation(name, z), value=z)
        for name, z in result.contributions
    ]


def _deviation(name: str, z: float) -> str:
    side = "above" if z > 0 else "below"
    if abs(z) >= NEVER_MOVED_Z:  # its scale is the fallback: it had one value all along
        return f"{name} is {side} the one value it always had"
    return f"{name} is {abs(z):.1f} robust SDs {side} its healthy median"
