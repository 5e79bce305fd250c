"""Same seed, same run: the simulated clock makes /metrics byte-for-byte repeatable."""

from __future__ import annotations

from tests.simulator.support import make_sim, render, run_for


def history(seed: int, scenario: str = "kv_cache_exhaustion") -> tuple[str, list[str]]:
    sim = make_sim(scenario, seed=seed)
    run_for(sim, 200)
    return render(sim), list(sim.log.lines)


def test_it_repeats_a_run_exactly_for_the_same_seed() -> None:
    assert history(seed=7) == history(seed=7)


def test_it_repeats_a_run_through_a_crash_and_restart() -> None:
    def crash_and_back(seed: int) -> str:
        sim = make_sim("memory_leak_oom", seed=seed)
        run_for(sim, 260)
        return render(sim)

    assert crash_and_back(3) == crash_and_back(3)


def test_it_runs_differently_for_another_seed() -> None:
    assert history(seed=7)[0] != history(seed=8)[0]
