"""Percentiles from histogram buckets, computed the way Prometheus' histogram_quantile does."""

from __future__ import annotations

import math

import pytest

from agent.collectors.histogram import Histogram, delta, quantile, summarize

INF = math.inf


def test_it_interpolates_linearly_inside_the_bucket_holding_the_rank() -> None:
    buckets = [(1.0, 20.0), (2.0, 60.0), (4.0, 100.0), (INF, 100.0)]

    assert quantile(0.5, buckets) == pytest.approx(1.75)  # rank 50: 30 of 40 into (1, 2]
    assert quantile(0.9, buckets) == pytest.approx(3.5)  # rank 90: 30 of 40 into (2, 4]
    assert quantile(0.1, buckets) == pytest.approx(0.5)  # the first bucket starts at 0


def test_it_answers_the_highest_finite_bound_for_ranks_in_the_inf_bucket() -> None:
    assert quantile(0.99, [(1.0, 50.0), (2.0, 90.0), (INF, 100.0)]) == 2.0


def test_it_summarizes_only_the_observations_gained_between_scrapes() -> None:
    before = Histogram(buckets=[(0.1, 1000.0), (0.5, 5000.0), (INF, 5000.0)], count=5000, sum=900)
    after = Histogram(buckets=[(0.1, 1000.0), (0.5, 5010.0), (INF, 5010.0)], count=5010, sum=903)
    gained = delta(before, after)
    assert gained is not None
    summary = summarize(gained)

    assert summary is not None
    assert (summary.count, summary.mean_s) == (10, pytest.approx(0.3))
    assert summary.p50_s == pytest.approx(0.3)  # rank 5 halfway into (0.1, 0.5]


def test_it_has_no_summary_when_nothing_was_observed() -> None:
    hist = Histogram(buckets=[(0.1, 0.0), (INF, 0.0)], count=0, sum=0)
    assert summarize(hist) is None


def test_it_refuses_to_compare_histograms_whose_buckets_changed() -> None:
    before = Histogram(buckets=[(0.1, 1.0), (INF, 1.0)], count=1, sum=0.05)
    after = Histogram(buckets=[(0.2, 2.0), (INF, 2.0)], count=2, sum=0.1)
    assert delta(before, after) is None


def test_it_repairs_buckets_that_dip_from_float_noise() -> None:
    # Differences of large counters can leave a later bucket a hair below an earlier one.
    hist = Histogram(buckets=[(1.0, 10.0), (2.0, 9.999999), (INF, 10.0)], count=10, sum=5)
    summary = summarize(hist)
    assert summary is not None and summary.p99_s <= 1.0
