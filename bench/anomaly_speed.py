"""Measure what one `learning.anomaly` score call costs, and what `learning.multivariate` costs.

1. Score N samples of a daily-seasonal noisy stream (epoch-second timestamps) and N samples with
   datetime timestamps; print microseconds per call (budget: 50 us).
2. Fit the multivariate model on 10,000 checkpoint feature rows and score one row many times;
   print the fit time (budget: seconds) and milliseconds per score (budget: 0.3 ms).

    .venv/bin/python bench/anomaly_speed.py [--samples 200000]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from learning import multivariate
from learning.anomaly import make_detector
from learning.window import SERIES, Window


def stream(n: int) -> list[tuple[float, float]]:
    rng = random.Random(1)
    return [(1.7e9 + 60.0 * i, 50 + 20 * math.sin(i / 229.2) + rng.gauss(0, 2)) for i in range(n)]


def time_scores(samples: list[tuple[float, float]], as_datetime: bool) -> float:
    start = datetime(2024, 1, 1)
    rows = (
        [(start + timedelta(seconds=t - 1.7e9), v) for t, v in samples] if as_datetime else samples
    )
    detector = make_detector()
    began = time.perf_counter()
    for t, v in rows:
        detector.score(t, v)
    return (time.perf_counter() - began) / len(rows) * 1e6


def time_multivariate(rows: int, scores: int) -> tuple[float, float]:
    """Return (seconds to fit `rows` checkpoints, milliseconds per scored checkpoint)."""
    rng = np.random.default_rng(2)
    t = np.arange(rows) * 10.0
    history = Window(t, {name: rng.normal(50, 5, rows) for name in SERIES}, ["serving"] * rows)
    from sklearn.ensemble import IsolationForest  # noqa: F401 (its import is not fitting)

    began = time.perf_counter()
    model = multivariate.fit([history])
    fit_s = time.perf_counter() - began
    newest = Window(t[-2:], {k: v[-2:] for k, v in history.series.items()}, ["serving"] * 2)
    began = time.perf_counter()
    for _ in range(scores):
        multivariate.score(model, newest)
    return fit_s, (time.perf_counter() - began) / scores * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000)
    args = parser.parse_args()
    samples = stream(args.samples)
    print(f"univariate, epoch seconds: {time_scores(samples, False):.1f} us per score (budget 50)")
    print(f"univariate, datetimes:     {time_scores(samples, True):.1f} us per score (budget 50)")
    fit_s, score_ms = time_multivariate(10_000, 2_000)
    print(
        f"multivariate: fit 10,000 rows in {fit_s:.2f} s; {score_ms:.3f} ms per score (budget 0.3)"
    )


if __name__ == "__main__":
    main()
