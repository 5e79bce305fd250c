"""The safety gate: may this proposal run by itself now, or must an operator decide? Pure.

A proposal executes automatically only when every check passes:

    confidence     the learner's confidence >= the auto threshold (global default, overridden
                   per risk level, then per strategy)
    enabled        the strategy is enabled for automatic execution
    not paused     neither the host nor the fleet is paused (pauses expire, like silences)
    cooldown       the host had no mitigation in the last cooldown_s
    rate limit     the strategy ran fewer than its limit in the last rate_window_s, fleet-wide
    blast radius   the serving capacity taken away at once, this one included, stays within
                   the fleet budget, and so does the number of hosts of the model being mitigated
    breakers       the strategy's breaker is closed (it opens after repeated failures) and the
                   host's is closed (it opens after repeated mitigation of the same host); an
                   open host breaker sends everything for that host to an operator

A strategy in shadow mode never runs by itself: the gate says what it would have done (all
checks but shadow passed) so the UI can show the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

RISKS = ("low", "medium", "high")
FAILED_OUTCOMES = frozenset({"failure", "made_worse"})


@dataclass(frozen=True)
class Settings:
    auto_threshold: float = 0.9
    risk_thresholds: dict[str, float] = field(default_factory=lambda: {"high": 0.98})
    strategy_thresholds: dict[str, float] = field(default_factory=dict)
    auto_enabled: frozenset[str] = frozenset()  # strategies that may run by themselves
    shadow: frozenset[str] = frozenset()  # strategies that only record what they would do
    cooldown_s: float = 600.0
    rate_limit: int = 10  # executions of one strategy, fleet-wide, per window
    rate_window_s: float = 3600.0
    capacity_budget: float = 0.25  # share of the fleet's serving capacity out at once
    max_hosts_per_model: int = 1  # hosts of one model being mitigated at once
    strategy_breaker_failures: int = 3  # failed outcomes among its last `breaker_window`
    breaker_window: int = 5
    host_breaker_mitigations: int = 3  # mitigations of one host within host_breaker_s
    host_breaker_s: float = 1800.0

    def threshold(self, strategy: str, risk: str) -> float:
        if strategy in self.strategy_thresholds:
            return self.strategy_thresholds[strategy]
        return self.risk_thresholds.get(risk, self.auto_threshold)


@dataclass(frozen=True, slots=True)
class Request:
    host: str
    model: str | None
    strategy: str
    risk: str
    confidence: float
    capacity_cost: float  # share of the host's capacity, 0-1


@dataclass(frozen=True, slots=True)
class Execution:
    """A mitigation that ran (or runs) somewhere in the fleet."""

    host: str
    model: str | None
    strategy: str
    started_at: float
    ends_at: float  # when its capacity is back (the end of its verification at the latest)
    capacity_cost: float
    outcome: str | None = None  # None while it runs or is verified


@dataclass(frozen=True, slots=True)
class Pause:
    scope: str  # "fleet" or a host name
    reason: str
    owner: str
    until: float


@dataclass(frozen=True, slots=True)
class FleetState:
    hosts: int  # hosts serving or able to
    hosts_per_model: dict[str, int] = field(default_factory=dict)
    executions: Sequence[Execution] = ()  # recent ones, any order
    pauses: Sequence[Pause] = ()


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class GateDecision:
    auto: bool  # execute now without an operator
    shadow: bool  # a shadow strategy that would have run
    checks: tuple[Check, ...]
    host_breaker_open: bool

    @property
    def blocked_by(self) -> list[str]:
        return [c.detail for c in self.checks if not c.ok]


def decide(req: Request, settings: Settings, fleet: FleetState, now: float) -> GateDecision:
    """Return whether `req` may run by itself now, with every check and why it failed."""
    host_breaker = _host_breaker(req, settings, fleet, now)
    checks = (
        _confidence(req, settings),
        Check(
            "enabled",
            req.strategy in settings.auto_enabled,
            f"{req.strategy} is not enabled for automatic execution",
        ),
        _paused(req, fleet, now),
        _cooldown(req, settings, fleet, now),
        _rate(req, settings, fleet, now),
        _capacity(req, settings, fleet, now),
        _per_model(req, settings, fleet, now),
        _strategy_breaker(req, settings, fleet),
        host_breaker,
    )
    passed = all(c.ok for c in checks)
    shadow = req.strategy in settings.shadow
    return GateDecision(passed and not shadow, passed and shadow, checks, not host_breaker.ok)


def _confidence(req: Request, settings: Settings) -> Check:
    need = settings.threshold(req.strategy, req.risk)
    return Check(
        "confidence",
        req.confidence >= need,
        f"confidence {req.confidence:.2f} under the {req.risk}-risk threshold {need:.2f}",
    )


def _paused(req: Request, fleet: FleetState, now: float) -> Check:
    for p in fleet.pauses:
        if p.until > now and p.scope in ("fleet", req.host):
            where = "the fleet" if p.scope == "fleet" else req.host
            return Check("paused", False, f"{where} paused by {p.owner}: {p.reason}")
    return Check("paused", True, "not paused")


def _running(fleet: FleetState, now: float) -> list[Execution]:
    return [e for e in fleet.executions if e.started_at <= now < e.ends_at]


def _cooldown(req: Request, settings: Settings, fleet: FleetState, now: float) -> Check:
    last = max((e.started_at for e in fleet.executions if e.host == req.host), default=None)
    ok = last is None or now - last >= settings.cooldown_s
    return Check(
        "cooldown",
        ok,
        f"{req.host} was mitigated {0 if last is None else now - last:.0f} s "
        f"ago (cooldown {settings.cooldown_s:.0f} s)",
    )


def _rate(req: Request, settings: Settings, fleet: FleetState, now: float) -> Check:
    n = sum(
        1
        for e in fleet.executions
        if e.strategy == req.strategy and now - e.started_at < settings.rate_window_s
    )
    return Check(
        "rate_limit",
        n < settings.rate_limit,
        f"{req.strategy} ran {n} times in {settings.rate_window_s / 60:.0f} min "
        f"(limit {settings.rate_limit})",
    )


def _capacity(req: Request, settings: Settings, fleet: FleetState, now: float) -> Check:
    if req.capacity_cost <= 0:
        return Check("blast_radius", True, "takes no capacity")
    out = sum(e.capacity_cost for e in _running(fleet, now))
    after = (out + req.capacity_cost) / max(fleet.hosts, 1)
    return Check(
        "blast_radius",
        after <= settings.capacity_budget + 1e-9,
        f"{after:.0%} of the fleet's capacity would be out at once "
        f"(budget {settings.capacity_budget:.0%})",
    )


def _per_model(req: Request, settings: Settings, fleet: FleetState, now: float) -> Check:
    if req.capacity_cost <= 0:
        return Check("hosts_per_model", True, "takes no capacity")
    busy = {e.host for e in _running(fleet, now) if e.model == req.model and e.capacity_cost > 0}
    busy.discard(req.host)
    ok = len(busy) < settings.max_hosts_per_model
    return Check(
        "hosts_per_model",
        ok,
        f"{len(busy)} other host(s) of {req.model} are being mitigated "
        f"(at most {settings.max_hosts_per_model} at once)",
    )


def _strategy_breaker(req: Request, settings: Settings, fleet: FleetState) -> Check:
    done = sorted(
        (e for e in fleet.executions if e.strategy == req.strategy and e.outcome is not None),
        key=lambda e: e.started_at,
    )[-settings.breaker_window :]
    failed = sum(1 for e in done if e.outcome in FAILED_OUTCOMES)
    return Check(
        "strategy_breaker",
        failed < settings.strategy_breaker_failures,
        f"{req.strategy} failed {failed} of its last {len(done)} runs: its breaker is open",
    )


def _host_breaker(req: Request, settings: Settings, fleet: FleetState, now: float) -> Check:
    recent = [
        e
        for e in fleet.executions
        if e.host == req.host and now - e.started_at < settings.host_breaker_s
    ]
    failed = sum(1 for e in recent if e.outcome in FAILED_OUTCOMES)
    ok = len(recent) < settings.host_breaker_mitigations and failed < 2
    return Check(
        "host_breaker",
        ok,
        f"{req.host} was mitigated {len(recent)} times in "
        f"{settings.host_breaker_s / 60:.0f} min ({failed} failed): its breaker is open",
    )
