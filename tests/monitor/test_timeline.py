from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.timeline import segments

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_it_cuts_the_window_into_the_states_the_host_was_in() -> None:
    transitions = [
        (at(-30), "stopped", "loading_weights"),  # before the window: not drawn
        (at(15), "serving", "degraded"),
        (at(45), "degraded", "failed_cuda_oom"),
    ]

    result = segments(transitions, start=at(0), end=at(60), current="failed_cuda_oom")

    assert [(s.state, s.left_pct, s.width_pct, s.tone) for s in result] == [
        ("serving", 0.0, 25.0, "ok"),
        ("degraded", 25.0, 50.0, "warn"),
        ("failed_cuda_oom", 75.0, 25.0, "bad"),
    ]


def test_it_draws_one_segment_when_nothing_changed() -> None:
    result = segments([], start=at(0), end=at(60), current="loading_weights")
    assert [(s.state, s.width_pct, s.tone) for s in result] == [
        ("loading_weights", 100.0, "starting")
    ]
