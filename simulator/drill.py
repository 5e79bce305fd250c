"""A drill of the self-healing loop: simulated faults, the real control-plane code, real agents,
and a scripted operator. Used by `make bench-loop` (bench/loop) and tests/healing/test_loop.py.

Each step of simulated time: the fleet advances; every agent is polled (monitor.polling) and
its checkpoint stored (monitor.ingest) and analysed with the guardrails watching
(monitor.analysis, healing.triggers); the scripted operator decides on what waits for it
after a think time; approved proposals run on the agents (healing.execution) and are judged
after their verification window (healing.verification); the learner learns from all of it.
Time is the fleet's simulated clock throughout, so hours of incidents take minutes.

The faults are the simulator's scenarios, with one change: a restart cures them (a mitigation
works) instead of replaying the timeline; a host is redeployed with its original arguments a
while after each incident resolves, which brings its fault back. A scripted operator approves
the strategies it likes for each failure type and vetoes the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import statistics
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulator.fleet import Fleet, FleetConfig, run_fleet

SCENARIOS = ["kv_cache_exhaustion", "memory_leak_oom", "thermal_throttling", "engine_death"]
# What the scripted operator approves for each failure type; anything else it vetoes.
OPERATOR_LIKES: dict[str, frozenset[str]] = {
    "kv_cache_exhausted": frozenset({"lower_max_num_seqs", "lower_max_num_batched_tokens"}),
    "cuda_oom": frozenset({"drain_and_restart", "lower_gpu_memory_utilization"}),
    "thermal_throttling": frozenset({"reduce_batch_size"}),
    "hang": frozenset({"restart_failed_workers"}),
    "engine_dead": frozenset({"restart_failed_workers"}),
}
AUTO_TOO = ("restart_failed_workers",)  # high risk, enabled for the learning drill
THINK_S = 20.0  # the operator answers this long after a proposal appears
# The drill's hosts fail every ten minutes or so, far more often than real ones, so the learning
# drill loosens the per-host and fleet limits (the safety drills keep the defaults): otherwise
# cooldowns, breakers and the capacity budget, not the learner, would decide nearly everything.
LEARNING_DRILL_SETTINGS = {
    "CAPACITY_BUDGET": 0.5,
    "MITIGATION_COOLDOWN_S": 120.0,
    "HOST_BREAKER_MITIGATIONS": 6,
    "MITIGATION_RATE_LIMIT": 60,
    "MAX_HOSTS_PER_MODEL": 4,
    "INCIDENT_QUIET_S": 180.0,
}
REDEPLOY_AFTER_S = 60.0  # a healed host is redeployed (its fault returns) this long after
TICK_S = 1.0  # coarser than the demo's 0.25 s: four times less simulator work per hour


class ThreadedFleet:
    """The in-process simulated fleet on an event loop of its own thread, so that code which
    calls asyncio.run() (the control plane's execution) can reach its agents."""

    def __init__(self, config: FleetConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._cm = run_fleet(config)
        self.fleet: Fleet = self.run(self._cm.__aenter__())

    def run(self, coro: Any, timeout_s: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout_s)

    def advance(self, seconds: float) -> None:
        self.run(self.fleet.advance(seconds))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.fleet.clock.time(), tz=UTC)

    def close(self) -> None:
        self.run(self._cm.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Report:
    proposals: int = 0
    decided_by_operator: int = 0
    auto: int = 0
    auto_agreed: int = 0
    vetoed_then_auto: int = 0  # automatic runs of a strategy the operator had vetoed before
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    auto_share_by_quarter: list[float] = field(default_factory=list)
    recovery_s: list[float] = field(default_factory=list)  # first signal -> verified success
    incidents: int = 0
    incidents_resolved: int = 0
    max_capacity_out: float = 0.0  # share of the fleet, at once
    max_auto_capacity_out: float = 0.0  # of it, what automatic runs took
    breaker_asks: int = 0  # proposals sent to an operator because a host's breaker was open
    held_back: Counter[str] = field(default_factory=Counter)  # safety checks that stopped one
    confidence_by_quarter: list[float] = field(default_factory=list)  # median of the proposals
    asked_before_first_auto: int = 0  # proposals the operator saw before the learner first acted

    @property
    def agreement(self) -> float:
        return self.auto_agreed / self.auto if self.auto else float("nan")

    def lines(self) -> list[str]:
        rec = sorted(self.recovery_s)
        p50 = statistics.median(rec) if rec else float("nan")
        p90 = rec[int(0.9 * (len(rec) - 1))] if rec else float("nan")
        return [
            f"incidents {self.incidents}, resolved {self.incidents_resolved}; proposals "
            f"{self.proposals}: {self.decided_by_operator} decided by the operator, {self.auto} "
            "executed by the learner itself",
            "share executed automatically, by quarter of the drill: "
            + " -> ".join(f"{100 * s:.0f} %" for s in self.auto_share_by_quarter)
            + f" (the first {self.asked_before_first_auto} proposals all went to the operator)",
            f"automatic choices the operator would have made: {self.auto_agreed}/{self.auto} "
            f"({100 * self.agreement:.1f} %); automatic runs of a strategy it had vetoed: "
            f"{self.vetoed_then_auto}",
            "outcomes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
            + "; proposals ended "
            + ", ".join(f"{k} {v}" for k, v in self.statuses.most_common()),
            f"first signal -> verified recovery: p50 {p50:.0f} s, p90 {p90:.0f} s "
            f"(n={len(rec)}; includes the {300:.0f} s verification window)",
            f"most capacity out at once: {100 * self.max_capacity_out:.0f} % of the fleet "
            f"(automatic runs: {100 * self.max_auto_capacity_out:.0f} %)",
            "median confidence of the proposals, by quarter: "
            + " -> ".join(f"{c:.2f}" for c in self.confidence_by_quarter),
            "what kept proposals from running by themselves: "
            + ", ".join(f"{k} {v}" for k, v in self.held_back.most_common()),
        ]


def drill(
    hosts: int = 8,
    duration_s: float = 3600.0,
    step_s: float = 10.0,
    seed: int = 11,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """The learning drill: `hosts` hosts with recurring faults and the scripted operator, for
    `duration_s` simulated seconds. Needs Django set up on a database the drill may fill."""
    from django.test import override_settings

    from healing.models import StrategySetting

    # The admin lets restarts of dead or hung engines run by themselves too (high risk: they
    # need a confidence of 0.98); by default they always wait for an operator.
    StrategySetting.objects.filter(strategy__in=AUTO_TOO).update(auto_enabled=True)
    with override_settings(**LEARNING_DRILL_SETTINGS):
        return _run(hosts, SCENARIOS, seed, duration_s, step_s, progress, operator=True,
                    cure=True, redeploy=True)  # fmt: skip


def all_hosts_at_once(hosts: int = 8, duration_s: float = 900.0, seed: int = 5) -> Report:
    """Safety: the same fault on every host at once, a learner sure of its answer, and no
    operator: automatic runs must stay within the capacity budget."""
    prime("kv_cache_exhausted", "lower_max_num_seqs")
    return _run(hosts, ["kv_cache_exhaustion"], seed, duration_s, 10.0, None, operator=False,
                cure=True, redeploy=False)  # fmt: skip


def keeps_failing(duration_s: float = 2700.0, seed: int = 5) -> Report:
    """Safety: a host whose overheating comes back soon after every mitigation (the fault is
    the cooling, which a restart does not fix), a confident learner and no operator: its
    breaker must open and an operator be asked."""
    prime("thermal_throttling", "reduce_batch_size")
    return _run(4, ["thermal_throttling", "healthy", "healthy", "healthy"], seed, duration_s,
                10.0, None, operator=False, cure=False, redeploy=False)  # fmt: skip


def prime(failure_type: str, strategy: str, n: int = 40) -> None:
    """Teach the learner that operators approve `strategy` for `failure_type` and that it
    works, in every context of a host that serves, as if after weeks of history."""
    from django.utils import timezone

    from healing import learner_store

    for state, load in itertools.product(("serving", "degraded"), ("busy", "queued")):
        key = f"{failure_type}|{state}|{load}"
        for _ in range(n):
            learner_store.learn(kind="approved", context_key=key, strategy=strategy,
                                at=timezone.now())  # fmt: skip
            learner_store.learn(kind="outcome", context_key=key, strategy=strategy,
                                at=timezone.now(), outcome="success", execution_s=60.0)  # fmt: skip


def _run(
    hosts: int,
    scenarios: list[str],
    seed: int,
    duration_s: float,
    step_s: float,
    progress: Callable[[str], None] | None,
    *,
    operator: bool,
    cure: bool,
    redeploy: bool,
) -> Report:
    from monitor.models import Host

    config = FleetConfig(hosts=hosts, seed=seed, scenarios=scenarios, speed=0, tick_s=TICK_S)
    fleet = ThreadedFleet(config)
    try:
        for host in fleet.fleet.hosts:
            if cure:  # a restart cures: the mitigation is what heals
                host.sim.scenario = dataclasses.replace(
                    host.sim.scenario, replay_after_restart=False, restart_after_death_s=None
                )
        for entry in fleet.fleet.manifest["hosts"]:
            Host.objects.update_or_create(
                name=entry["name"],
                defaults={"agent_url": entry["agent_url"], "agent_token": entry["token"],
                          "model_name": entry.get("model") or ""},
            )  # fmt: skip
        return _loop(fleet, duration_s, step_s, progress, operator=operator, redeploy=redeploy)
    finally:
        fleet.close()


def _loop(
    fleet: ThreadedFleet,
    duration_s: float,
    step_s: float,
    progress: Callable[[str], None] | None,
    *,
    operator: bool,
    redeploy: bool,
) -> Report:
    from healing import execution, expiry, triggers, verification
    from healing.models import Proposal

    report = Report()
    asked: dict[int, float] = {}  # proposal -> when the operator saw it
    vetoed: set[tuple[str, str]] = set()  # (failure type, strategy) the operator vetoed
    healed_at: dict[str, float] = {}  # host -> when its last incident resolved
    auto_timeline: list[tuple[float, bool]] = []
    confidences: list[tuple[float, float]] = []
    t = 0.0
    while t < duration_s:
        fleet.advance(step_s)
        t += step_s
        now = fleet.now()
        checked = _poll_and_analyse(fleet, now)
        for p in triggers.handle(checked, now, lambda pk: None):
            report.proposals += 1
            auto_timeline.append((t, p.auto))
            confidences.append((t, p.confidence))
            if p.auto:
                _count_auto(report, p, vetoed)
            report.held_back.update(c["name"] for c in p.gate if not c["ok"])
            if any(c["name"] == "host_breaker" and not c["ok"] for c in p.gate):
                report.breaker_asks += 1
        if operator:
            _operator(now, t, asked, vetoed, report)
        for p in Proposal.objects.filter(status=Proposal.Status.APPROVED):
            execution.execute(p.pk, clock=fleet.now)
        everything, automatic = _capacity_out(now)
        report.max_capacity_out = max(report.max_capacity_out, everything)
        report.max_auto_capacity_out = max(report.max_auto_capacity_out, automatic)
        for p in Proposal.objects.filter(status=Proposal.Status.VERIFYING, verify_until__lte=now):
            verification.verify(p.pk, now=now)
        expiry.expire_due(now)
        if redeploy:
            _redeploy(fleet, t, healed_at)
        if progress is not None and int(t) % 600 == 0:
            progress(
                f"  {t:.0f} s simulated, {report.proposals} proposals, {report.auto} automatic"
            )
    _finish(report, auto_timeline, duration_s)
    report.confidence_by_quarter = [
        statistics.median(q) if q else float("nan")
        for q in ([c for t, c in confidences if int(4 * t / duration_s) == i] for i in range(4))
    ]
    return report


def _poll_and_analyse(fleet: ThreadedFleet, now: datetime) -> list[Any]:
    from django.conf import settings

    from monitor import analysis, healing, ingest, polling
    from monitor.models import Host

    hosts = Host.objects.in_bulk()
    targets = [polling.PollTarget(h.pk, h.name, h.agent_url, h.agent_token, h.events_seen)
               for h in hosts.values()]  # fmt: skip
    results = fleet.run(polling.poll_hosts(targets, timeout_s=10.0, concurrency=64,
                                           max_bytes=settings.MAX_CHECKPOINT_BYTES))  # fmt: skip
    report = ingest.store_poll_results(hosts, results, now)
    watch = healing.Watch()
    findings = analysis.analyze_stored(report.checkpoints, now, observe=watch.observe)
    return watch.fired(findings.checkpoints)


def _operator(
    now: datetime, t: float, asked: dict[int, float], vetoed: set[tuple[str, str]], report: Report
) -> None:
    """The scripted operator: after THINK_S, approve what it likes (the proposal, else a liked
    alternative), veto the rest."""
    from django.contrib.auth import get_user_model

    from healing import decisions
    from healing.models import Proposal

    user, _ = get_user_model().objects.get_or_create(username="scripted-operator")
    for p in Proposal.objects.select_related("incident").filter(status=Proposal.Status.PENDING):
        seen = asked.setdefault(p.pk, t)
        if t - seen < THINK_S:
            continue
        likes = OPERATOR_LIKES.get(p.incident.failure_type, frozenset())
        alternatives = [a["strategy"] for a in p.alternatives if a["strategy"] in likes]
        if p.strategy in likes:
            choice, strategy = "approve", ""
        elif alternatives:
            choice, strategy = "alternative", alternatives[0]
        else:
            choice, strategy = "veto", ""
        if choice != "approve":
            vetoed.add((p.incident.failure_type, p.strategy))
        try:
            decisions.decide(p.pk, user, choice, strategy=strategy, enqueue=lambda pk: None,
                             now=now)  # fmt: skip
            report.decided_by_operator += 1
        except decisions.DecisionError:
            continue


def _count_auto(report: Report, p: Any, vetoed: set[tuple[str, str]]) -> None:
    report.auto += 1
    failure_type = p.incident.failure_type
    if p.strategy in OPERATOR_LIKES.get(failure_type, frozenset()):
        report.auto_agreed += 1
    if (failure_type, p.strategy) in vetoed:
        report.vetoed_then_auto += 1


def _capacity_out(now: datetime) -> tuple[float, float]:
    """Return the share of the fleet's capacity out at `now`: all of it, and what automatic
    runs took (an operator may approve past the budget; Sentinel by itself may not)."""
    from healing.fleet_state import RAN, capacity_back_at
    from healing.models import Proposal
    from monitor.models import Host

    out = {True: 0.0, False: 0.0}
    for p in Proposal.objects.filter(status__in=RAN, started_at__lte=now):
        if now.timestamp() < capacity_back_at(p, now):
            out[p.auto] += float(p.plan.get("capacity_cost") or 0.0)
    total = max(Host.objects.filter(enabled=True).count(), 1)
    return (out[True] + out[False]) / total, out[True] / total


def _redeploy(fleet: ThreadedFleet, t: float, healed_at: dict[str, float]) -> None:
    """Bring a fault back to hosts that have been healthy a while since their incident."""
    from healing.models import Incident

    resolved = Incident.objects.filter(
        state=Incident.State.RESOLVED, host__isnull=False
    ).select_related("host")
    latest: dict[str, datetime] = {}
    for incident in resolved:
        if incident.resolved_at is not None:
            name = incident.host.name
            latest[name] = max(latest.get(name, incident.resolved_at), incident.resolved_at)
    open_hosts = set(Incident.objects.exclude(state=Incident.State.RESOLVED)
                     .values_list("host__name", flat=True))  # fmt: skip
    for host in fleet.fleet.hosts:
        when = latest.get(host.name)
        if when is None or host.name in open_hosts:
            continue
        age = fleet.fleet.clock.time() - when.timestamp()
        if age >= REDEPLOY_AFTER_S and healed_at.get(host.name) != when.timestamp():
            healed_at[host.name] = when.timestamp()
            fleet.run(host.supervisor.redeploy())


def _finish(report: Report, auto_timeline: list[tuple[float, bool]], duration_s: float) -> None:
    from healing.models import Incident, Proposal

    quarters: list[list[bool]] = [[], [], [], []]
    for t, auto in auto_timeline:
        quarters[min(int(4 * t / duration_s), 3)].append(auto)
    report.auto_share_by_quarter = [sum(q) / len(q) if q else 0.0 for q in quarters]
    autos = [i for i, (_, auto) in enumerate(auto_timeline) if auto]
    report.asked_before_first_auto = autos[0] if autos else len(auto_timeline)
    report.outcomes = Counter(
        Proposal.objects.exclude(outcome="").values_list("outcome", flat=True)
    )
    report.statuses = Counter(Proposal.objects.values_list("status", flat=True))
    host_incidents = Incident.objects.filter(host__isnull=False)  # not fleet groupings
    report.incidents = host_incidents.count()
    for incident in host_incidents.filter(state=Incident.State.RESOLVED):
        report.incidents_resolved += 1
        if incident.resolved_at and incident.signals:
            first = min(float(s["at"]) for s in incident.signals)
            report.recovery_s.append(incident.resolved_at.timestamp() - first)
