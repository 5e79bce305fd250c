"""Scenario files: every shipped one loads, and mistakes are reported with their place."""

from __future__ import annotations

import pytest

from simulator.scenario import (
    SCENARIO_DIR,
    VOCABULARY,
    ScenarioError,
    available_scenarios,
    load_scenario,
    parse_scenario,
)
from tests.simulator.support import make_sim, run_for, scenario_from

REQUIRED = {
    "healthy",
    "load_spike",
    "kv_cache_exhaustion",
    "memory_leak_oom",
    "engine_death",
    "nccl_hang",
    "thermal_throttling",
    "disk_fill",
}


def test_it_ships_every_required_scenario() -> None:
    assert set(available_scenarios()) >= REQUIRED
    for name in available_scenarios():
        assert load_scenario(name).description


def test_it_documents_every_effect_of_the_vocabulary() -> None:
    text = (SCENARIO_DIR / "README.md").read_text()
    for kind in VOCABULARY:
        assert f"`{kind}`" in text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"effects": [{"kind": "meteor", "at_s": 1}]}, "effects[0]: kind 'meteor' is not one of"),
        ({"effects": [{"kind": "load", "at_s": 1}]}, "load needs multiplier"),
        ({"effects": [{"kind": "load", "multiplier": 2}]}, "at_s is required"),
        ({"effects": [{"kind": "fd_leak", "at_s": 1, "per_s": 1, "x": 2}]}, "unknown keys x"),
        ({"effects": [{"kind": "engine_death", "at_s": 1, "cause": "bad"}]}, "cause must be"),
        ({"lifecycle": {"restart_after": 3}}, "[lifecycle]: unknown keys restart_after"),
        ({"host": {"model": "gpt-9"}}, "unknown model 'gpt-9'"),
        ({"effects": [{"kind": "disk_fill", "at_s": 1}]}, "disk_fill needs mib_per_s"),
        (
            {"effects": [{"kind": "disk_fill", "at_s": 1, "mib_per_s": -5}]},
            "effects[0]: mib_per_s must be a positive number",
        ),
        (
            {"effects": [{"kind": "disk_fill", "at_s": 1, "mib_per_s": "fast"}]},
            "mib_per_s must be a positive number",
        ),
        (
            {"effects": [{"kind": "disk_fill", "at_s": 1, "mib_per_s": 9, "path": "/data"}]},
            "effects[0]: path must be one of /, /dev/shm",
        ),
        ({"host": {"root_free_gib": 0}}, "root_free_gib must be above 0 and below the disk's 3576"),
        ({"host": {"root_free_gib": 4000}}, "[host]: root_free_gib must be above 0"),
    ],
)
def test_it_rejects_a_scenario_outside_the_vocabulary(data: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_scenario("bad", data)


def test_it_replays_a_repeating_timeline() -> None:
    sim = make_sim(scenario_from({
        "effects": [{"kind": "restart", "at_s": 20}],
        "lifecycle": {"repeat_every_s": 40},
    }))  # fmt: skip
    run_for(sim, 150)
    assert sim.runs >= 3  # restarted at 20 s of uptime, again and again
