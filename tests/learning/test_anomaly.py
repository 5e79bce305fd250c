from __future__ import annotations

import math
import random
import sys
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from learning.anomaly import ALARM_THRESHOLD, StreamDetector, make_detector, rarity

T0 = 1_700_000_000.0
MINUTE = 60.0


def noise(n: int, seed: int = 1, sigma: float = 2.0, mean: float = 50.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sigma) for _ in range(n)]


def scores(
    values: list[float], step_s: float = MINUTE, times: list[float] | None = None
) -> list[float]:
    detector = make_detector()
    times = times or [T0 + i * step_s for i in range(len(values))]
    return [detector.score(t, v) for t, v in zip(times, values, strict=True)]


def alarms(values: list[float], **kwargs: object) -> list[int]:
    return [i for i, s in enumerate(scores(values, **kwargs)) if s >= ALARM_THRESHOLD]  # type: ignore[arg-type]


def test_it_reads_naive_and_aware_datetimes_and_epoch_seconds_alike() -> None:
    values = [*noise(400), 90.0, *noise(50, seed=2)]
    epoch = [T0 + i * MINUTE for i in range(len(values))]
    naive = [datetime(1970, 1, 1) + timedelta(seconds=t) for t in epoch]
    aware = [datetime.fromtimestamp(t, UTC) for t in epoch]

    by_epoch = scores(values, times=epoch)

    assert scores(values, times=naive) == by_epoch  # type: ignore[arg-type]
    assert scores(values, times=aware) == by_epoch  # type: ignore[arg-type]
    assert max(by_epoch) >= ALARM_THRESHOLD


def test_it_reads_the_times_other_tools_write_as_the_same_epoch_seconds() -> None:
    # pandas columns hold numpy datetime64 (nanoseconds); Java and JavaScript write epoch
    # milliseconds; CSVs hold ISO 8601 text. Read as seconds, nanoseconds are after every
    # limit and each sample scored 0.
    import numpy as np

    values = [*noise(400), 90.0, *noise(50, seed=2)]
    epoch = [T0 + i * MINUTE for i in range(len(values))]
    by_epoch = scores(values, times=epoch)
    seconds = np.array(epoch, dtype="int64").astype("datetime64[s]")
    written = {
        "ms": [t * 1e3 for t in epoch],
        "us": [t * 1e6 for t in epoch],
        "ns": [int(t) * 10**9 for t in epoch],
        "datetime64[ns]": list(seconds.astype("datetime64[ns]")),
        "datetime64[s]": list(seconds),
        "iso": [datetime.fromtimestamp(t, UTC).isoformat() for t in epoch],
        "iso naive": [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") for t in epoch],
        "text": [str(t) for t in epoch],
    }  # fmt: skip

    for how, times in written.items():
        assert scores(values, times=times) == by_epoch, how  # type: ignore[arg-type]
    assert max(by_epoch) >= ALARM_THRESHOLD
    assert all(math.copysign(1.0, s) == 1.0 for s in by_epoch)  # no -0.0 either


def test_it_scores_missing_and_infinite_values_zero_and_skips_them() -> None:
    values = noise(500)
    detector, clean = make_detector(), make_detector()
    for i, v in enumerate(values):
        t = T0 + i * MINUTE
        if i % 50 == 7:
            assert [detector.score(t, bad) for bad in (math.nan, None, math.inf, -math.inf)] == [
                0.0
            ] * 4
        assert detector.score(t, v) == clean.score(t, v)


def test_samples_without_a_usable_value_or_time_score_zero_and_are_not_learned() -> None:
    values = [*noise(500), 95.0, *noise(100, seed=3)]
    detector, clean, seen = make_detector(), make_detector(), []
    bad_values: list[object] = ["lots", [], {}, 1e308, -1e200, 10**400]
    bad_times: list[object] = [math.nan, math.inf, None, "now", [T0], 1e300]
    for i, v in enumerate(values):
        t = T0 + i * MINUTE
        if i % 40 == 9:
            assert [detector.score(t, bad) for bad in bad_values] == [0.0] * len(bad_values)  # type: ignore[arg-type]
            assert [detector.score(bad, v) for bad in bad_times] == [0.0] * len(bad_times)  # type: ignore[arg-type]
        seen.append(clean.score(t, v))
        assert detector.score(t, v) == seen[-1]
    assert max(seen) >= ALARM_THRESHOLD  # the spike: the junk did not blunt it


def test_it_never_alarms_on_constant_streams() -> None:
    for level in (0.0, 5.0, -3.25, 1e12):
        assert max(scores([level] * 3000)) == 0.0


def test_it_never_alarms_on_quantised_or_flat_noise() -> None:
    rng = random.Random(3)
    flips = [float(rng.random() < 0.1) for _ in range(5000)]  # mostly 0, sometimes 1
    steps = [float(round(v)) for v in noise(5000, seed=4, sigma=0.7)]  # integers around 50
    stairs = [float(i // 500) for i in range(5000)]  # a slow counter of unit steps

    assert alarms(flips) == []
    assert alarms(steps) == []
    assert alarms(stairs) == []


def test_it_never_alarms_on_gaussian_noise() -> None:
    for seed in (11, 12, 13):
        assert alarms(noise(5000, seed=seed)) == []


def test_the_alarm_line_is_the_middle_of_the_scale() -> None:
    # A harness that cuts at 0.5, as most do, alarms at the detector's own line: an event of
    # 1 in 10,000 for its stream. The scale runs on to 1 at 1 in 10^10.
    assert ALARM_THRESHOLD == 0.5 and rarity(0.5) == pytest.approx(4.0)
    assert rarity(0.0) == 0.0 and rarity(1.0) == pytest.approx(10.0)
    grid = [i / 100 for i in range(101)]
    assert all(rarity(a) < rarity(b) for a, b in pairwise(grid))

    values = [*noise(2000), 50.0 + 12 * 2.0, *noise(500, seed=5)]
    seen = scores(values)
    assert seen[2000] >= 0.5 and max(seen[:2000] + seen[2001:]) < 0.5


def test_it_alarms_on_a_clear_spike_at_once_and_then_calms_down() -> None:
    values = [*noise(2000), 50.0 + 12 * 2.0, *noise(500, seed=5)]

    found = alarms(values)

    assert found == [2000]


def test_it_alarms_on_a_level_shift_quickly_and_then_accepts_the_new_level() -> None:
    values = noise(2000) + noise(3000, seed=6, mean=70.0)

    found = alarms(values)

    assert found and 2000 <= found[0] <= 2003
    assert all(i < 2030 for i in found)


def test_it_learns_daily_peaks_but_alarms_when_the_cycle_breaks() -> None:
    per_day = 288  # 5-minute samples
    rng = random.Random(8)
    values = [
        50 + 30 * math.sin(2 * math.pi * i / per_day) + rng.gauss(0, 2) for i in range(12 * per_day)
    ]
    broken_from = 11 * per_day + per_day // 8  # day 12: the morning peak does not come
    for i in range(broken_from, broken_from + per_day // 4):
        values[i] = 50 + rng.gauss(0, 2)

    found = alarms(values, step_s=300.0)

    assert [
        i for i in found if 3 * per_day <= i < broken_from
    ] == []  # the learned rhythm is normal
    assert any(broken_from <= i < broken_from + per_day // 4 for i in found)


def test_it_handles_irregular_sampling() -> None:
    rng = random.Random(9)
    times, t = [], T0
    for _ in range(3000):
        t += rng.choice((10.0, 15.0, 60.0, 300.0, 3600.0, 3 * 3600.0))
        times.append(t)
    values = noise(3000, seed=10)
    values[2500] = 50.0 + 15 * 2.0

    found = alarms(values, times=times)

    assert found[0] == 2500 and all(i <= 2503 for i in found)


def test_it_keeps_a_fixed_amount_of_state_over_a_million_samples() -> None:
    detector = make_detector()
    rng = random.Random(12)
    for i in range(20_000):  # two weeks: every profile bin has been visited
        detector.score(T0 + i * MINUTE, rng.gauss(0, 1))
    size = state_size(detector)
    for i in range(20_000, 1_000_000):
        detector.score(T0 + i * MINUTE, rng.gauss(0, 1))

    assert state_size(detector) == size


def test_it_is_deterministic_and_stays_in_the_unit_interval() -> None:
    values = [*noise(3000, seed=14), 500.0, -500.0, *noise(500, seed=15, mean=-20)]

    first, second = scores(values), scores(values)

    assert first == second
    assert all(0.0 <= s <= 1.0 for s in first)
    assert max(first) == 1.0


def state_size(detector: StreamDetector) -> int:
    """Return the bytes held by the detector's state, containers included."""
    seen: set[int] = set()

    def size(obj: object) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        total = sys.getsizeof(obj)
        if isinstance(obj, list | tuple):
            total += sum(size(item) for item in obj)
        for name in getattr(obj, "__slots__", ()):
            total += size(getattr(obj, name))
        if hasattr(obj, "__dict__"):
            total += sum(size(v) for v in vars(obj).values())
        return total

    return size(detector)


def test_it_reports_an_episode_once_not_on_every_sample_of_it() -> None:
    detector = make_detector()
    rng = random.Random(5)
    scores = [detector.score(float(i), 10.0 + rng.gauss(0, 0.5)) for i in range(400)]
    # A burst of noise: one episode of many unusual samples.
    scores += [detector.score(float(400 + i), 10.0 + rng.gauss(0, 6.0)) for i in range(20)]
    alarms = [i for i, s in enumerate(scores) if s >= ALARM_THRESHOLD]
    assert alarms and min(alarms) >= 400
    assert len(alarms) <= 3  # the first alarm, and at most a couple of much stronger ones


def test_an_episode_at_the_top_of_the_scale_is_reported_once_too() -> None:
    # Huge spikes a few samples apart (as a network counter's bursts): every one scores 1, and
    # the ones after the first belong to the same episode.
    values = [*noise(2000), 1e6, 50.0, 3e6, 50.0, 50.0, 2e6, 50.0, *noise(300, seed=9)]

    found = alarms(values)

    assert found == [2000]


def test_a_daily_job_stops_alarming_once_it_has_come_two_days_running() -> None:
    per_day = 288  # 5-minute samples
    rng = random.Random(11)
    values = [50.0 + rng.gauss(0, 2) for _ in range(8 * per_day)]
    job_at = [day * per_day + 36 + rng.randint(-3, 3) for day in range(1, 7)]  # ~03:00 daily
    for i in job_at:
        values[i] = 150.0 + rng.gauss(0, 10)
    elsewhere = 7 * per_day + 150  # day 8, half past noon: no job then
    values[elsewhere] = 150.0

    found = alarms(values, step_s=300.0)

    assert found[:2] == job_at[:2]  # new the first two days
    assert not set(found) & set(job_at[2:])  # expected from then on
    assert elsewhere in found  # the same spike at another time of day is still news
