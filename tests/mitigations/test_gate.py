"""The safety gate: each limit, alone, keeps a confident proposal from running by itself."""

from __future__ import annotations

from dataclasses import replace

from mitigations.gate import Execution, FleetState, Pause, Request, Settings, decide

NOW = 10_000.0
SETTINGS = Settings(auto_enabled=frozenset({"lower_max_num_seqs", "reset_prefix_cache"}))
REQ = Request("gpu-01", "llama", "lower_max_num_seqs", "medium", 0.95, 1.0)
FLEET = FleetState(hosts=8, hosts_per_model={"llama": 8})


def blocked(
    req: Request = REQ, settings: Settings = SETTINGS, fleet: FleetState = FLEET
) -> list[str]:
    decision = decide(req, settings, fleet, NOW)
    assert decision.auto == (not decision.blocked_by)
    return [c.name for c in decision.checks if not c.ok]


def running(host: str, strategy: str = "lower_max_num_seqs", cost: float = 1.0, ago: float = 30,
            outcome: str | None = None, model: str = "llama") -> Execution:  # fmt: skip
    return Execution(host, model, strategy, NOW - ago, NOW - ago + 400, cost, outcome)


def test_a_confident_enabled_proposal_runs() -> None:
    assert blocked() == []


def test_confidence_thresholds_global_per_risk_per_strategy() -> None:
    assert blocked(replace(REQ, confidence=0.85)) == ["confidence"]
    assert blocked(replace(REQ, risk="high")) == ["confidence"]  # high risk needs 0.98
    lenient = replace(SETTINGS, strategy_thresholds={"lower_max_num_seqs": 0.8})
    assert blocked(replace(REQ, confidence=0.85), lenient) == []


def test_a_strategy_not_enabled_waits_for_an_operator() -> None:
    assert blocked(replace(REQ, strategy="drain_and_restart")) == ["enabled"]


def test_pauses_of_the_host_or_fleet_until_they_expire() -> None:
    pause = Pause("gpu-01", "maintenance", "ana", NOW + 60)
    assert blocked(fleet=replace(FLEET, pauses=[pause])) == ["paused"]
    assert blocked(fleet=replace(FLEET, pauses=[replace(pause, scope="fleet")])) == ["paused"]
    assert blocked(fleet=replace(FLEET, pauses=[replace(pause, until=NOW - 1)])) == []
    assert blocked(fleet=replace(FLEET, pauses=[replace(pause, scope="gpu-02")])) == []
    reasons = decide(REQ, SETTINGS, replace(FLEET, pauses=[pause]), NOW).blocked_by
    assert reasons == ["gpu-01 paused by ana: maintenance"]


def test_cooldown_and_rate_limit() -> None:
    recent = running("gpu-01", ago=120, outcome="success")
    assert "cooldown" in blocked(fleet=replace(FLEET, executions=[recent]))
    many = [running(f"gpu-{i}", ago=3000 - i, outcome="success", cost=0.0) for i in range(10)]
    assert blocked(fleet=replace(FLEET, executions=many)) == ["rate_limit"]


def test_blast_radius_in_capacity_and_hosts_per_model() -> None:
    other_model = [running("gpu-05", model="qwen"), running("gpu-06", model="qwen")]
    assert blocked(fleet=replace(FLEET, executions=other_model)) == ["blast_radius"]  # 3/8 > 25 %
    same_model = [running("gpu-02")]
    assert blocked(fleet=replace(FLEET, executions=same_model)) == ["hosts_per_model"]
    free = replace(REQ, strategy="reset_prefix_cache", risk="low", capacity_cost=0.0)
    assert blocked(free, fleet=replace(FLEET, executions=same_model + other_model)) == []


def test_breakers_open_after_repeated_failures_or_mitigations() -> None:
    failures = [running(f"gpu-{i}", ago=5000 + i, outcome="failure", cost=0) for i in range(2, 5)]
    assert blocked(fleet=replace(FLEET, executions=failures)) == ["strategy_breaker"]
    again = [running("gpu-01", strategy="reset_prefix_cache", ago=700 + i * 300, cost=0,
                     outcome="success") for i in range(3)]  # fmt: skip
    decision = decide(REQ, SETTINGS, replace(FLEET, executions=again), NOW)
    assert [c.name for c in decision.checks if not c.ok] == ["host_breaker"]
    assert decision.host_breaker_open


def test_shadow_mode_records_what_it_would_have_done() -> None:
    shadow = replace(SETTINGS, shadow=frozenset({"lower_max_num_seqs"}))
    decision = decide(REQ, shadow, FLEET, NOW)
    assert not decision.auto and decision.shadow
    assert not decide(replace(REQ, confidence=0.5), shadow, FLEET, NOW).shadow
