from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import scipy.linalg

from agent.checkpoint import Transition, to_dict
from agent.lifecycle import LifecycleState
from learning.state_graph import StateGraph, transition_matrix
from simulator.fleet import FleetConfig, run_fleet

H = 300.0


def hosts(*histories: tuple[str, list[tuple[float, str]]]) -> list[tuple[str, float, str, str]]:
    """Rows from per-host histories: (host, [(at, state entered), ...]), the first entry being
    where the host starts (entered from starting_api_server)."""
    rows = []
    for host, entries in histories:
        previous = "starting_api_server"
        for at, state in entries:
            rows.append((host, at, previous, state))
            previous = state
    return rows


def test_it_counts_time_still_in_a_state_so_long_quiet_stays_are_not_risky() -> None:
    rows = hosts(*[(f"h{i}", [(0.0, "serving"), (100.0, "failed_cuda_oom")]) for i in range(3)])
    rows += hosts(("quiet", [(0.0, "serving")]))  # serving for 700 s, still serving
    model = StateGraph(rows).model(now=700.0)
    rate = 3 / (3 * 100 + 700)  # three timed exits over all the time spent serving
    assert model.failure_probabilities("serving") == pytest.approx(
        {"failed_cuda_oom": 1 - math.exp(-rate * H)}
    )
    dwell = model.dwell("serving")
    assert dwell.mean_s == pytest.approx(1 / rate) and (dwell.stays, dwell.censored) == (3, 1)


def test_it_splits_the_exit_rate_between_competing_next_states() -> None:
    rows = hosts(("a", [(0.0, "serving"), (100.0, "failed_nccl")]))
    for name in "bcd":
        rows += hosts((name, [(0.0, "serving"), (100.0, "draining"), (110.0, "stopped")]))
    model = StateGraph(rows).model(now=110.0)
    rate = 4 / 400
    expected = 0.25 * (1 - math.exp(-rate * H))  # a quarter of the exits fail; draining never
    assert model.risk("serving") == pytest.approx(expected)
    assert model.probability("serving", "draining") == 0.75
    assert model.risk("stopped") == 0.0 and model.exit_rates[model.index["stopped"]] == 0.0


def test_it_adds_up_the_stays_along_a_two_step_way_to_failure() -> None:
    rows = []
    for name in "ab":
        rows += hosts((name, [(0.0, "serving"), (200.0, "degraded"), (250.0, "failed_hang")]))
    model = StateGraph(rows).model(now=250.0)
    l1, l2 = 1 / 200, 1 / 50
    hypoexponential = 1 - (l2 * math.exp(-l1 * H) - l1 * math.exp(-l2 * H)) / (l2 - l1)
    assert model.risk("serving") == pytest.approx(hypoexponential)
    assert model.risk("degraded") == pytest.approx(1 - math.exp(-l2 * H))


def test_it_conditions_on_how_long_the_host_has_been_in_its_state() -> None:
    rows = []
    for i in range(6):  # every stay in serving lasts exactly 600 s, then the engine dies
        rows += hosts((f"h{i}", [(0.0, "serving"), (600.0, "failed_engine_dead")]))
    model = StateGraph(rows).model(now=600.0)
    memoryless = 1 - math.exp(-H / 600)
    assert model.risk("serving") == pytest.approx(memoryless)
    assert model.risk("serving", elapsed_s=550.0) == pytest.approx(1.0)
    assert model.risk("serving", elapsed_s=0.0) == pytest.approx(0.0)
    assert model.risk("serving", elapsed_s=250.0) == pytest.approx(0.0)  # dies at 600, not 550
    # Longer than any stay seen: the data say nothing, back to the memoryless answer.
    assert model.risk("serving", elapsed_s=900.0) == pytest.approx(memoryless)
    assert model.dwell("serving").median_s == 600.0


def branching_fleet() -> StateGraph:
    """serving -> degraded 0.6, failed_cuda_oom 0.2, draining 0.2;
    degraded -> failed_cuda_oom 0.5, serving 1/3, failed_hang 1/6.
    Stays: serving 100 s, degraded 20 s, draining 10 s."""
    histories: list[tuple[str, list[tuple[float, str]]]] = []
    for i in range(2):
        histories.append((f"oom{i}", [(0.0, "serving"), (100.0, "failed_cuda_oom")]))
        histories.append((f"drain{i}", [(0.0, "serving"), (100.0, "draining"), (110.0, "stopped")]))
        histories.append((f"back{i}", [(0.0, "serving"), (100.0, "degraded"), (120.0, "serving")]))
    for i in range(3):
        histories.append(
            (f"slow{i}", [(0.0, "serving"), (100.0, "degraded"), (120.0, "failed_cuda_oom")])
        )
    histories.append(("hang", [(0.0, "serving"), (100.0, "degraded"), (120.0, "failed_hang")]))
    return StateGraph(hosts(*histories))


def test_it_finds_the_most_probable_ways_to_each_failure() -> None:
    model = branching_fleet().model(now=120.0)
    paths = model.failure_paths("serving", k=3)
    oom = paths["failed_cuda_oom"]
    assert [p.states for p in oom] == [
        ("serving", "degraded", "failed_cuda_oom"),
        ("serving", "failed_cuda_oom"),
    ]
    assert [p.probability for p in oom] == pytest.approx([0.6 * 0.5, 0.2])
    assert oom[0].expected_duration_s == pytest.approx(100 + 20)
    l1, l2 = 1 / 100, 1 / 20
    within = 1 - (l2 * math.exp(-l1 * H) - l1 * math.exp(-l2 * H)) / (l2 - l1)
    assert oom[0].probability_within_horizon == pytest.approx(0.3 * within)
    assert [p.probability for p in paths["failed_hang"]] == pytest.approx([0.6 / 6])
    assert model.failure_paths("serving", k=1)["failed_cuda_oom"][0].probability == pytest.approx(
        0.3
    )


def test_it_finds_the_best_way_back_to_serving() -> None:
    histories = [
        (f"h{i}", [(0.0, "serving"), (100.0, "failed_cuda_oom"), (120.0, "initializing"),
                   (150.0, "loading_weights"), (180.0, "serving")])
        for i in range(3)
    ]  # fmt: skip
    histories.append(
        ("gave_up", [(0.0, "serving"), (100.0, "failed_cuda_oom"), (110.0, "stopped")])
    )
    model = StateGraph(hosts(*histories)).model(now=180.0)
    recovery = model.recovery("failed_cuda_oom")
    assert recovery is not None
    assert recovery.path.states == ("failed_cuda_oom", "initializing", "loading_weights", "serving")
    assert recovery.path.probability == pytest.approx(0.75)
    assert recovery.probability_eventually == pytest.approx(0.75)
    # failed_cuda_oom stays: 20, 20, 20, 10 s -> mean 17.5; initializing 30; loading 30
    assert recovery.path.expected_duration_s == pytest.approx(17.5 + 30 + 30)
    assert 0.7 < recovery.probability_within_horizon <= 0.75
    assert model.recovery("stopped") is None  # never seen to come back
    assert model.recovery("serving") is None


def test_it_ignores_self_loops_for_rates_but_shows_them() -> None:
    rows = hosts(("a", [(0.0, "serving"), (50.0, "serving"), (100.0, "failed_nccl")]))
    model = StateGraph(rows).model(now=100.0)
    assert model.dwell("serving").mean_s == 100.0  # the self-loop did not end the stay
    assert model.probability("serving", "serving") == 0.0
    node = next(n for n in model.export()["nodes"] if n["state"] == "serving")
    assert node["self_loops"] == 1


def test_it_gives_the_same_model_for_repeated_and_unordered_transitions() -> None:
    ordered = hosts(("x", [(0.0, "serving"), (100.0, "degraded"), (130.0, "failed_hang")]))
    g1, g2 = StateGraph(ordered), StateGraph()
    for row in [*reversed(ordered), *ordered]:  # late arrivals, then an agent resending all
        g2.add(row)
    assert len(g1) == len(g2) == 3
    m1, m2 = g1.model(now=130.0), g2.model(now=130.0)
    assert m1.jumps == m2.jumps and m1.risk("serving") == m2.risk("serving") > 0
    assert m2.dwell("degraded").mean_s == 30.0


def test_it_takes_agent_transitions_dicts_and_updates_as_they_come() -> None:
    graph = StateGraph()
    first = Transition(
        id=1, at=0.0, from_state=LifecycleState.STARTING_API_SERVER,
        to_state=LifecycleState.SERVING, trigger="Application startup complete.",
    )  # fmt: skip
    graph.add(first, host="gpu-01")
    assert graph.model(now=300.0).risk("serving") == 0.0  # no failure seen yet
    graph.add({"host": "gpu-01", "at": 300.0, "from_state": "serving", "to_state": "failed_nccl"})
    assert graph.model(now=300.0).risk("serving") == pytest.approx(1 - math.exp(-1.0))
    assert graph.current("gpu-01") == ("failed_nccl", 300.0)
    stored_row = ("gpu-02", datetime.fromtimestamp(60.0, tz=UTC), "serving", "degraded")
    graph.add(stored_row)  # as the control plane's table gives it
    assert graph.current("gpu-02") == ("degraded", 60.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"host": "gpu-01", "from_state": "serving", "to_state": "degraded"},  # no time
        {"host": "gpu-01", "at": "noon", "from_state": "serving", "to_state": "degraded"},
        {"host": "gpu-01", "at": math.nan, "from_state": "serving", "to_state": "degraded"},
        ("gpu-01", 5.0, "serving"),  # three fields
        None,
        7,
    ],
)
def test_a_malformed_transition_is_refused_with_what_is_wrong_and_the_graph_is_unchanged(
    bad: object,
) -> None:
    graph = StateGraph([("gpu-01", 0.0, "starting_engine", "serving")])
    with pytest.raises(ValueError, match="transition"):
        graph.add(bad)
    assert graph.rows() == StateGraph([("gpu-01", 0.0, "starting_engine", "serving")]).rows()


def test_it_handles_an_empty_graph_and_states_it_has_never_seen() -> None:
    model = StateGraph().model(now=0.0)
    assert model.export() == {"horizon_s": H, "nodes": [], "edges": [], "current": None}
    assert model.failure_probabilities("serving") == {} and model.risk("serving") == 0.0
    assert model.failure_paths("serving") == {} and model.recovery("degraded") is None
    seen = StateGraph(hosts(("a", [(0.0, "serving"), (10.0, "failed_hang")]))).model(now=10.0)
    drawn = seen.export(current_state="sleeping", elapsed_s=5.0)
    sleeping = next(n for n in drawn["nodes"] if n["state"] == "sleeping")
    assert sleeping["current"] and sleeping["risk"] == 0.0 and sleeping["mean_dwell_s"] is None
    assert seen.risk("failed_gpu_hardware") == 1.0  # a failed state is its own failure


def test_it_treats_the_unknown_state_as_a_state_left_untimed() -> None:
    rows = [("a", 0.0, "unknown", "pre_startup"), ("a", 2.0, "pre_startup", "serving")]
    model = StateGraph(rows).model(now=2.0)
    assert model.dwell("unknown").stays == 0  # the agent's first state has no known start
    assert model.exit_rates[model.index["unknown"]] > 0
    node = next(n for n in model.export()["nodes"] if n["state"] == "unknown")
    assert node["colour"] == "unknown" and node["risk"] == 0.0


def test_it_exports_plain_json_for_the_dashboard() -> None:
    model = branching_fleet().model(now=120.0)
    drawn = model.export(current_state="degraded", elapsed_s=10.0)
    text = json.dumps(drawn, allow_nan=False)
    assert json.loads(text) == drawn
    by_state = {n["state"]: n for n in drawn["nodes"]}
    assert by_state["degraded"]["current"] and drawn["current"]["state"] == "degraded"
    assert by_state["failed_cuda_oom"]["colour"] == "failed"
    assert by_state["degraded"]["colour"] == "risk_high"
    assert by_state["serving"]["mean_dwell_s"] == pytest.approx(100.0)
    out_of: dict[str, float] = {}
    for edge in drawn["edges"]:
        out_of[edge["from"]] = out_of.get(edge["from"], 0.0) + edge["probability"]
    assert all(total == pytest.approx(1.0) for total in out_of.values())
    assert {"from": "serving", "to": "degraded", "count": 6, "probability": 0.6} in drawn["edges"]


def test_it_exponentiates_generators_like_scipy() -> None:
    rng = np.random.default_rng(0)
    rates = np.array([1e-3, 1.0, 50.0, 0.01, 0.0, 3.0])
    q = rng.random((6, 6)) * rates[:, None]
    np.fill_diagonal(q, 0.0)
    np.fill_diagonal(q, -q.sum(axis=1))
    for t in (0.5, 30.0, 300.0, 3600.0):
        assert np.allclose(transition_matrix(q, t), scipy.linalg.expm(q * t), atol=1e-10)


# On the simulator ----------------------------------------------------------------------------


async def fleet_transitions(scenarios: list[str], seconds: float) -> tuple[StateGraph, float]:
    """Return the graph of a simulated fleet's transitions and the simulated time at the end."""
    graph = StateGraph()
    config = FleetConfig(hosts=len(scenarios), seed=5, scenarios=scenarios, speed=0)
    async with run_fleet(config) as fleet:
        seen = [0] * len(fleet.hosts)
        for _ in range(int(seconds / 5)):
            await fleet.advance(5)
            for i, host in enumerate(fleet.hosts):
                assert host.agent is not None
                cp: dict[str, Any] = to_dict(await host.agent.collect(events_since=seen[i]))
                seen[i] = cp["event_seq"]
                graph.extend(cp["transitions"], host=cp["host"])
        return graph, fleet.epoch + fleet.t


def test_it_learns_the_simulated_fleets_failures_and_recoveries() -> None:
    scenarios = ["memory_leak_oom", "engine_death", "healthy"]
    graph, now = asyncio.run(fleet_transitions(scenarios, 600))
    model = graph.model(now)
    risks = model.failure_probabilities("serving")
    assert risks["failed_cuda_oom"] > 0.1 and risks["failed_hang"] > 0.01
    top_oom = model.failure_paths("serving")["failed_cuda_oom"][0]
    assert top_oom.states == ("serving", "failed_cuda_oom")
    assert model.failure_paths("degraded")["failed_hang"][0].states == ("degraded", "failed_hang")
    recovery = model.recovery("failed_cuda_oom")
    assert recovery is not None and recovery.path.states[-1] == "serving"
    # The supervisor restarts 20 s after the death; startup takes a few seconds more.
    assert 20 < recovery.path.expected_duration_s < 40


def test_it_sees_no_risk_in_a_simulated_healthy_fleet() -> None:
    graph, now = asyncio.run(fleet_transitions(["healthy", "healthy"], 300))
    model = graph.model(now)
    assert model.risk("serving") == 0.0 and model.failure_paths("serving") == {}
    assert model.dwell("serving").censored == 2
