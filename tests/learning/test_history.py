"""Failures read from checkpoints, labelled windows, and the simulator's ground truth."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from agent.checkpoint import ErrorEvent, Transition, to_dict
from agent.lifecycle import LifecycleState as S
from learning.features import features
from learning.history import (
    PIECE_BEFORE_S,
    FailureEvent,
    failures_in,
    labelled_rows,
    labelled_windows,
    labels_at,
    trailing,
    training_set,
)
from learning.prediction import DEFAULT_HORIZON_S
from learning.window import window
from simulator.history import polled_every, simulate, varied
from simulator.scenario import load_scenario
from tests.factories import make_checkpoint

T0 = 1_781_503_200.0


def _history(states: list[S], **per_index: dict[str, Any]) -> list[dict[str, Any]]:
    """Return checkpoint dicts 5 s apart in `states`; `per_index["i7"]` changes the 8th."""
    found = []
    for i, state in enumerate(states):
        changes = per_index.get(f"i{i}", {})
        cp = make_checkpoint(collected_at=T0 + 5 * i, lifecycle_state=state, **changes)
        found.append(to_dict(cp))
    return found


def test_it_names_a_death_by_its_strongest_cause_and_ends_it_when_serving_again() -> None:
    oom = ErrorEvent(category="cuda_oom", message="torch.OutOfMemoryError", first_seen_at=T0 + 49)
    died = Transition(id=1, at=T0 + 48, from_state=S.SERVING, to_state=S.FAILED_ENGINE_DEAD,
                      trigger="EngineDeadError")  # fmt: skip
    states = [S.SERVING] * 10 + [S.FAILED_ENGINE_DEAD, S.FAILED_CUDA_OOM, S.INITIALIZING]
    checkpoints = _history(
        states + [S.SERVING] * 3, i10={"transitions": [died]}, i11={"errors": [oom]}
    )

    (failure,) = failures_in(checkpoints)

    assert failure.failure_type == "cuda_oom"
    assert failure.started_at == T0 + 48  # when the agent saw it fail, not the next poll
    assert failure.ended_at == T0 + 65  # serving again
    assert failure.source == "lifecycle:failed_engine_dead"


def test_it_finds_a_preemption_storm_but_not_a_few_preemptions() -> None:
    few = {"vllm": None}  # unreachable checkpoints break nothing
    calm = _history([S.SERVING] * 30, i3=few)
    for cp in calm[10:12]:
        cp["vllm"]["rates"]["preemptions_per_s"] = 0.2  # 2 preemptions: no storm
    stormy = _history([S.SERVING] * 40)
    for cp in stormy[12:20]:
        cp["vllm"]["rates"]["preemptions_per_s"] = 0.4  # 16 within 40 s

    assert failures_in(calm) == []
    (storm,) = failures_in(stormy)
    assert storm.failure_type == "kv_cache_exhausted"
    assert storm.started_at == T0 + 60  # the first preemption of the storm
    assert storm.ended_at == T0 + 95 + 60  # clear for a minute


def test_it_finds_thermal_throttling_and_a_hang_from_three_checkpoints_in_a_row() -> None:
    checkpoints = _history([S.SERVING] * 20)
    for cp in checkpoints[5:9]:
        cp["gpus"][0]["throttle_reasons"] = ["sw_thermal_slowdown"]
    for cp in checkpoints[12:14]:
        cp["vllm"]["forward_progress"] = False  # two: not yet a hang

    (hot,) = failures_in(checkpoints)
    assert (hot.failure_type, hot.started_at) == ("thermal_throttling", T0 + 25)


def test_it_labels_windows_with_the_time_to_each_failure_and_what_is_going_on() -> None:
    failures = [
        FailureEvent("cuda_oom", T0 + 400, T0 + 430, "test"),
        FailureEvent("thermal_throttling", T0 + 50, T0 + 150, "test"),
    ]
    before, during, after = labels_at([T0 + 200, T0 + 410, T0 + 500], failures, 300.0)

    assert before.time_to_failure_s == {"cuda_oom": 200.0} and before.ongoing == frozenset()
    assert during.time_to_failure_s == {} and during.ongoing == {"cuda_oom"}
    assert after.time_to_failure_s == {} and after.ongoing == frozenset()


def test_it_samples_only_serving_hosts_with_a_minute_of_history() -> None:
    states = [S.LOADING_WEIGHTS] * 4 + [S.SERVING] * 40 + [S.FAILED_CUDA_OOM] * 4
    windows, labels = labelled_windows(_history(states), every_s=10.0)

    assert windows and len(windows) == len(labels)
    assert all(w.states[-1] == "serving" for w in windows)
    assert windows[0].t[-1] - T0 >= 60.0
    assert all(w.t[-1] - w.t[0] <= 600.0 for w in windows)


def test_it_builds_a_training_set_that_keeps_each_run_in_its_group() -> None:
    runs = [("healthy/1", _history([S.SERVING] * 30)), ("healthy/2", _history([S.SERVING] * 30))]
    windows, labels, groups = training_set(runs, every_s=30.0)
    assert len(windows) == len(labels) == len(groups)
    assert set(groups) == {"healthy/1", "healthy/2"}


def test_it_reads_the_same_oom_from_the_checkpoints_as_the_simulator_records() -> None:
    run = simulate("memory_leak_oom", 1, 260.0, vary=False)

    (truth,) = [f for f in run.truth if f.failure_type == "cuda_oom"]
    (seen,) = [f for f in failures_in(run.checkpoints) if f.failure_type == "cuda_oom"]
    assert 150 < truth.started_at - run.epoch < 220  # the leak fills the headroom in minutes
    assert abs(seen.started_at - truth.started_at) <= 5.0
    assert run.checkpoints[-1]["collected_at"] == run.epoch + 260.0  # the simulated clock


def test_it_varies_a_scenario_by_seed_within_its_repeating_period() -> None:
    thermal = load_scenario("thermal_throttling")
    one, factors = varied(thermal, random.Random(1))
    again, _ = varied(thermal, random.Random(1))
    other, _ = varied(thermal, random.Random(2))

    assert one == again and one != other
    (cooling,) = one.effects
    assert cooling.params["temp_rise_c"] == 45.0 * factors["temp_rise_c"]
    assert one.repeat_every_s == 420.0 * factors["repeat_every_s"]
    assert cooling.until_s is not None
    assert cooling.until_s + cooling.params["ramp_s"] <= one.repeat_every_s


def test_it_records_when_the_traffic_behind_a_kv_storm_began_to_rise() -> None:
    # The scenario's traffic starts to grow 30 s after the server serves, over ~3 minutes.
    run = simulate("kv_cache_exhaustion", 1, 330.0, vary=False)

    storm = next(f for f in run.truth if f.failure_type == "kv_cache_exhausted")
    serving = next(cp["collected_at"] for cp in run.checkpoints
                   if cp["lifecycle_state"] == "serving")  # fmt: skip
    (started, onset), *_ = run.traffic_onsets
    assert started == storm.started_at
    # Uptime 30 s, plus the ~3 s the ramp takes to lift demand 5 %, within a checkpoint.
    assert serving + 28.0 <= onset <= serving + 34.0
    assert 60.0 < storm.started_at - onset < 240.0
    calm = simulate("healthy", 1, 120.0, vary=False)
    assert calm.traffic_onsets == []


def test_a_history_read_in_pieces_gives_the_windows_and_labels_of_the_whole() -> None:
    """A host's week is read a few hours at a time (monitor/training.py): each piece, with
    PIECE_BEFORE_S before it and the horizon after, must give the rows the whole would."""
    run = simulate("memory_leak_oom", 3, 1500.0)
    cps, start = run.checkpoints, run.checkpoints[0]["collected_at"]
    whole, failures = window(cps), failures_in(cps)
    piece_s, seen, followed = 300.0, 0, 0
    for since in np.arange(start, cps[-1]["collected_at"], piece_s).tolist():
        until = since + piece_s
        first, last = since - PIECE_BEFORE_S, until + DEFAULT_HORIZON_S
        piece = [cp for cp in cps if first <= cp["collected_at"] < last]
        x, ends, labels = labelled_rows(piece, since=since, until=until)
        for row, end, label in zip(x, ends, labels, strict=True):
            i = int(np.searchsorted(whole.t, end))
            assert np.allclose(row, features(trailing(whole, i), end), equal_nan=True)
            assert label == labels_at([end], failures, DEFAULT_HORIZON_S)[0]
            followed += bool(label.time_to_failure_s)
        seen += len(ends)
    assert seen > 100 and followed > 20  # the run's OOMs were in it


def test_it_keeps_every_window_a_failure_followed_and_thins_the_others() -> None:
    run = simulate("memory_leak_oom", 3, 1500.0)
    x, ends, labels = labelled_rows(run.checkpoints)
    x_thin, ends_thin, labels_thin = labelled_rows(run.checkpoints, quiet_every_s=120.0)

    followed = [e for e, lb in zip(ends, labels, strict=True) if lb.time_to_failure_s]
    quiet = [e for e, lb in zip(ends_thin, labels_thin, strict=True) if not lb.time_to_failure_s]
    assert followed == [e for e, lb in zip(ends_thin, labels_thin, strict=True)
                        if lb.time_to_failure_s]  # fmt: skip
    assert min(np.diff(quiet)) >= 120.0
    assert len(ends_thin) < len(ends) and x_thin.shape == (len(ends_thin), x.shape[1])


def test_a_scenario_runs_on_a_host_of_several_gpus_with_its_effect_on_the_gpu_it_names() -> None:
    # A foreign process on GPU 0 of four, tensor-parallel vLLM on all four: GPU 0 fills first.
    run = simulate("foreign_process_oom", 1, 260.0, vary=False, gpus=4)

    (truth,) = [f for f in run.truth if f.failure_type == "cuda_oom"]
    before = [cp for cp in run.checkpoints if cp["collected_at"] < truth.started_at - 10]
    used = [g["memory_used_bytes"] for g in before[-1]["gpus"]]
    assert len(used) == 4 and used[0] > max(used[1:]) + 5 * 1024**3
    assert all(len(g["processes"]) >= 1 for g in before[-1]["gpus"])  # a vLLM rank on each


def test_a_slower_poll_keeps_every_nth_checkpoint_with_the_events_of_those_left_out() -> None:
    run = simulate("memory_leak_oom", 1, 260.0, vary=False)
    slow = polled_every(run.checkpoints, 6)

    assert [cp["collected_at"] for cp in slow] == [
        cp["collected_at"] for cp in run.checkpoints[::6]
    ]
    last = 6 * (len(slow) - 1)  # the newest kept checkpoint: the events up to it are delivered
    for kind in ("transitions", "errors"):
        delivered = [e["id"] for cp in run.checkpoints[: last + 1] for e in cp.get(kind) or []]
        assert delivered and [e["id"] for cp in slow for e in cp.get(kind) or []] == delivered
    # The OOM is read from the slow poll too, no more than one poll (30 s) later.
    (oom,) = [f for f in failures_in(run.checkpoints) if f.failure_type == "cuda_oom"]
    (slow_oom,) = [f for f in failures_in(slow) if f.failure_type == "cuda_oom"]
    assert 0 <= slow_oom.started_at - oom.started_at <= 30.0
