"""The fleet's lifecycle state graph: where states lead, how long hosts stay in them, and how
likely each one is to end in a failure within the horizon. Pure.

Transitions come from every host of the fleet as (host, at, from_state, to_state): tuples,
dicts, rows or agent.checkpoint.Transition-like objects (a Transition has no host; pass it
to `add`). `StateGraph` collects them as they arrive; `StateGraph.model(now)` fits a
continuous-time Markov chain to them and answers the questions:

    model.failure_probabilities("serving", horizon_s=300, elapsed_s=900)
    model.failure_paths("degraded", k=3)
    model.recovery("failed_cuda_oom")
    model.export(current_state="degraded", elapsed_s=40)   # nodes and edges, for drawing

The fit, in steps:

1. Each host's transitions, in time order, give dwell times: a stay in a state lasts from
   the transition into it to the transition out of it. The stay a host is in now is
   censored at `now` (it has lasted at least that long). A host's first stay has no known
   start and is not timed. A self-loop (from_state == to_state) does not end a stay.
2. A state's exit rate is its timed exits over its total time (censored stays included:
   leaving them out would make long, quiet stays in `serving` look short and risky). The
   jump probabilities are the shares of its exits to each next state.
3. Failure probabilities within the horizon come from exp(Q t) with the failed states made
   absorbing, computed by uniformization with scaling and squaring (numpy; stable, since
   every term is non-negative). With the dwell so far given, the first stay uses the
   empirical (Kaplan-Meier) distribution of that state's stays instead of the exponential.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.lifecycle import LifecycleState
from learning.prediction import DEFAULT_HORIZON_S

FAILED_STATES = frozenset(s.value for s in LifecycleState if s.is_failed)
SERVING = LifecycleState.SERVING.value
UNKNOWN = LifecycleState.UNKNOWN.value

MIN_STAY_S = 0.1  # the shortest a stay is taken to last
FALLBACK_DWELL_S = 60.0  # a state seen left but never timed is assumed to last at least this
MIN_EMPIRICAL_STAYS = 5  # timed stays needed before the empirical dwell replaces the exponential
CONDITION_STEPS = 60  # time steps over the horizon when conditioning on the dwell so far
MAX_PATH_EXPANSIONS = 5_000  # bound on the best-first path search
MAX_PATH_STATES = 12
RISK_HIGH = 0.2
RISK_MEDIUM = 0.05


# Input ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One transition, normalised."""

    host: str
    at: float
    from_state: str
    to_state: str


def as_row(item: Any, host: str | None = None) -> Row:
    """Return `item` (a (host, at, from, to) tuple, a mapping, or an object with `at`,
    `from_state`, `to_state` and maybe `host`) as a Row; `host` overrides the item's.
    `at` is epoch seconds or a datetime. Raises ValueError, saying what is wrong, for
    anything else."""
    try:
        if isinstance(item, tuple | list):
            item_host, at, src, dst = item
        elif isinstance(item, Mapping):
            item_host, at = item.get("host", ""), item["at"]
            src, dst = item["from_state"], item["to_state"]
        else:
            item_host, at = getattr(item, "host", ""), item.at
            src, dst = item.from_state, item.to_state
        when = at.timestamp() if hasattr(at, "timestamp") else float(at)  # datetime rows too
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"not a transition ({type(exc).__name__}: {exc}): {item!r:.200}") from exc
    if not math.isfinite(when):
        raise ValueError(f"a transition's time must be a finite number: {item!r:.200}")
    return Row(str(host if host is not None else item_host), when, _state(src), _state(dst))


def _state(value: Any) -> str:
    """Return a state's name: enum members by value, None and blanks as `unknown`."""
    text = str(getattr(value, "value", value) or "").strip()
    return text or UNKNOWN


class StateGraph:
    """The transitions of the whole fleet, per host in time order, added as they come."""

    def __init__(self, transitions: Iterable[Any] = ()) -> None:
        self._hosts: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
        self.extend(transitions)

    def add(self, transition: Any, host: str | None = None) -> None:
        """Add one transition; an exact repeat of one already held is ignored (agents resend
        events whose answer was lost)."""
        row = as_row(transition, host)
        rows = self._hosts[row.host]
        entry = (row.at, row.from_state, row.to_state)
        if rows and rows[-1][0] <= row.at:
            if rows[-1] != entry:
                rows.append(entry)
            return
        i = bisect.bisect_left(rows, entry)
        if i == len(rows) or rows[i] != entry:
            rows.insert(i, entry)

    def extend(self, transitions: Iterable[Any], host: str | None = None) -> None:
        for transition in transitions:
            self.add(transition, host)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._hosts.values())

    def hosts(self) -> list[str]:
        return sorted(self._hosts)

    def rows(self) -> list[Row]:
        """Return every transition held, host by host, each host's in time order."""
        return [Row(h, at, src, dst) for h in self.hosts() for at, src, dst in self._hosts[h]]

    def current(self, host: str) -> tuple[str, float] | None:
        """Return the state `host` is in and since when, from its newest transition."""
        rows = self._hosts.get(host)
        return (rows[-1][2], rows[-1][0]) if rows else None

    def model(self, now: float) -> StateModel:
        """Return the Markov model of the transitions held, with stays still open cut at `now`."""
        return _fit(self._hosts, now)


# Fitting -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    jumps: Counter[tuple[str, str]] = field(default_factory=Counter)
    self_loops: Counter[str] = field(default_factory=Counter)
    visits: Counter[str] = field(default_factory=Counter)
    stays: dict[str, list[tuple[float, bool]]] = field(default_factory=lambda: defaultdict(list))
    states: set[str] = field(default_factory=set)


def _fit(hosts: Mapping[str, list[tuple[float, str, str]]], now: float) -> StateModel:
    tally = _Tally()
    for rows in hosts.values():
        _tally_host(rows, now, tally)
    states = sorted(tally.states, key=_state_order)
    return StateModel(states, tally, now)


def _tally_host(rows: list[tuple[float, str, str]], now: float, tally: _Tally) -> None:
    """Count one host's jumps and time its stays (see the module docstring, step 1)."""
    state: str | None = None
    entered: float | None = None
    for at, src, dst in rows:
        tally.states.update((src, dst))
        if state is None:
            tally.visits[src] += 1
        if src == dst:
            tally.self_loops[src] += 1
            if state is None:
                state = src
            continue
        if state == src and entered is not None:
            tally.stays[src].append((at - entered, True))
        tally.jumps[(src, dst)] += 1
        tally.visits[dst] += 1
        state, entered = dst, at
    if state is not None and entered is not None and now >= entered:
        tally.stays[state].append((now - entered, False))


def _state_order(state: str) -> tuple[int, str]:
    """Lifecycle order first (as the dashboard lays states out), then unknown names."""
    order = [s.value for s in LifecycleState]
    return (order.index(state), state) if state in order else (len(order), state)


@dataclass(frozen=True, slots=True)
class Dwell:
    """How long hosts stay in one state."""

    mean_s: float | None  # total time over timed exits; None when never seen left
    median_s: float | None  # Kaplan-Meier, None when the survival never falls to 1/2
    p90_s: float | None
    stays: int  # timed stays that ended
    censored: int  # stays still going at `now`
    exposure_s: float  # all time spent in the state


@dataclass(frozen=True, slots=True)
class Path:
    """One way from a state to a target, through the states in order."""

    states: tuple[str, ...]
    probability: float  # of taking exactly this way, eventually (jump probabilities' product)
    probability_within_horizon: float  # of taking it and arriving within the horizon
    expected_duration_s: float  # the mean stays on the way, the target's excluded


@dataclass(frozen=True, slots=True)
class Recovery:
    """How a state gets back to serving."""

    path: Path  # the most probable way
    probability_eventually: float  # of reaching serving at all, by any way
    probability_within_horizon: float  # of reaching serving within the horizon, any way


class StateModel:
    """A continuous-time Markov chain fitted to the fleet's transitions at one `now`."""

    def __init__(self, states: list[str], tally: _Tally, now: float) -> None:
        self.now = now
        self.states = states
        self.index = {s: i for i, s in enumerate(states)}
        self._tally = tally
        self.jumps: dict[tuple[str, str], int] = dict(tally.jumps)
        self._exits = Counter[str]()
        for (src, _), count in tally.jumps.items():
            self._exits[src] += count
        self.jump_matrix = self._jump_matrix()
        self.exit_rates = np.array([self._exit_rate(s) for s in states])
        self.generator = self.jump_matrix * self.exit_rates[:, None]
        np.fill_diagonal(self.generator, -self.exit_rates)
        self.failed = np.array([s in FAILED_STATES for s in states], dtype=bool)
        self._survival: dict[str, _Survival | None] = {}
        self._failing: dict[float, np.ndarray] = {}  # horizon -> _failing_in's table
        self._after_jump: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}

    # Fitted figures ---------------------------------------------------------------------------

    def _jump_matrix(self) -> np.ndarray:
        n = len(self.states)
        jumps = np.zeros((n, n))
        for (src, dst), count in self._tally.jumps.items():
            jumps[self.index[src], self.index[dst]] = count / self._exits[src]
        return jumps

    def _exit_rate(self, state: str) -> float:
        """Timed exits over time spent (step 2); a state left but never timed gets a rate
        from FALLBACK_DWELL_S or its exposure, whichever is longer; one never left, 0."""
        stays = self._tally.stays.get(state, [])
        timed = sum(1 for _, ended in stays if ended)
        exposure = sum(duration for duration, _ in stays)
        if timed:
            # Stays shorter than the clock can tell (two log lines in one tick) still take time.
            return timed / max(exposure, MIN_STAY_S * timed)
        if self._exits[state]:
            return 1.0 / max(FALLBACK_DWELL_S, exposure)
        return 0.0

    def dwell(self, state: str) -> Dwell:
        stays = self._tally.stays.get(state, [])
        rate = self.exit_rates[self.index[state]] if state in self.index else 0.0
        survival = self._km(state)
        return Dwell(
            mean_s=1.0 / float(rate) if rate > 0 else None,
            median_s=survival.quantile(0.5) if survival else None,
            p90_s=survival.quantile(0.9) if survival else None,
            stays=sum(1 for _, ended in stays if ended),
            censored=sum(1 for _, ended in stays if not ended),
            exposure_s=float(sum(d for d, _ in stays)),
        )

    def probability(self, src: str, dst: str) -> float:
        """Return the share of `src`'s exits that go to `dst` (0 for unseen states)."""
        if src not in self.index or dst not in self.index:
            return 0.0
        return float(self.jump_matrix[self.index[src], self.index[dst]])

    # Failure within the horizon ---------------------------------------------------------------

    def failure_probabilities(
        self, state: str, horizon_s: float = DEFAULT_HORIZON_S, elapsed_s: float | None = None
    ) -> dict[str, float]:
        """Return, for each failed state, the probability that a host now in `state` reaches
        it within `horizon_s` (first failure only: failed states absorb).

        With `elapsed_s` (how long the host has been in `state`), its remaining stay follows
        the empirical distribution of that state's stays when there are enough of them. A
        failed state is its own failure (1); an unseen state has no known risk (empty).
        """
        if state in FAILED_STATES:
            return {state: 1.0}
        if state not in self.index or not self.failed.any():
            return {}
        i = self.index[state]
        failed = np.flatnonzero(self.failed)
        survival = self._km(state) if elapsed_s is not None else None
        if survival is not None and elapsed_s is not None and survival.at(elapsed_s) > 0:
            row = self._conditioned(i, survival, elapsed_s, horizon_s)
        else:
            row = self._absorbing_exp(horizon_s)[i, failed]
        return {self.states[f]: float(p) for f, p in zip(failed, row, strict=True)}

    def risk(
        self, state: str, horizon_s: float = DEFAULT_HORIZON_S, elapsed_s: float | None = None
    ) -> float:
        """Return the probability of any failure within `horizon_s` from `state`."""
        return min(sum(self.failure_probabilities(state, horizon_s, elapsed_s).values()), 1.0)

    def _absorbing_generator(self, absorbing: np.ndarray) -> np.ndarray:
        q: np.ndarray = self.generator.copy()
        q[absorbing] = 0.0
        return q

    def _absorbing_exp(self, horizon_s: float) -> np.ndarray:
        return transition_matrix(self._absorbing_generator(self.failed), horizon_s)

    def _conditioned(
        self, i: int, survival: _Survival, elapsed_s: float, horizon_s: float
    ) -> np.ndarray:
        """Return P(each failure within the horizon) when the first stay has lasted
        `elapsed_s` and ends as the empirical survival says (a semi-Markov first step).

        The horizon is cut into CONDITION_STEPS; the chance of leaving in each step is
        multiplied by where the jump leads and the chance of failing from there in the time
        left (exp(Q dt) applied step by step, averaged over each step's two ends).
        """
        u, after_jump = self._after_jump_from(i, horizon_s)
        left = 1.0 - survival.at_many(elapsed_s + u) / survival.at(elapsed_s)
        leave = np.diff(left)  # chance of leaving during each step
        result: np.ndarray = leave @ after_jump
        return result

    def _after_jump_from(self, i: int, horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Return the steps' times and, for each step, the chance of failing after a jump out
        of state `i` then: the same for every host in that state, so worked out once."""
        key = (i, horizon_s)
        if key not in self._after_jump:
            u = np.linspace(0.0, horizon_s, CONDITION_STEPS + 1)
            jumps = self.jump_matrix[i]
            self._after_jump[key] = u, np.einsum("j,mjf->mf", jumps, self._failing_in(horizon_s))
        return self._after_jump[key]

    def _failing_in(self, horizon_s: float) -> np.ndarray:
        """Return, for each step of the horizon, the chance of failing from each state in the
        time left after it: the same for every host and dwell, so worked out once."""
        if horizon_s not in self._failing:
            steps = CONDITION_STEPS
            failed = np.flatnonzero(self.failed)
            step = transition_matrix(self._absorbing_generator(self.failed), horizon_s / steps)
            reach = np.empty((steps + 1, len(self.states), len(failed)))
            reach[0] = np.eye(len(self.states))[:, failed]
            for m in range(1, steps + 1):
                reach[m] = step @ reach[m - 1]
            # averaged over each step's two ends
            self._failing[horizon_s] = 0.5 * (reach[steps - 1 :: -1] + reach[steps:0:-1])
        return self._failing[horizon_s]

    def _km(self, state: str) -> _Survival | None:
        if state not in self._survival:
            self._survival[state] = _Survival.fit(self._tally.stays.get(state, []))
        return self._survival[state]

    # Paths ------------------------------------------------------------------------------------

    def failure_paths(
        self, state: str, k: int = 3, horizon_s: float = DEFAULT_HORIZON_S
    ) -> dict[str, list[Path]]:
        """Return, for each failed state reachable from `state`, its `k` most probable ways
        there (simple paths through non-failed states), most probable first."""
        if state not in self.index or state in FAILED_STATES:
            return {}
        targets = self._reachable(state, through_failed=False) & FAILED_STATES
        found = self._best_paths(state, targets, k, through_failed=False)
        return {
            target: [self._path(p, horizon_s) for p in paths]
            for target, paths in found.items()
            if paths
        }

    def recovery(
        self, state: str, horizon_s: float = DEFAULT_HORIZON_S, target: str = SERVING
    ) -> Recovery | None:
        """Return the most probable way from `state` back to `target` (serving), with the
        chances of getting there at all and within `horizon_s`; None when never seen done."""
        if state not in self.index or state == target:
            return None
        if target not in self._reachable(state, through_failed=True):
            return None
        found = self._best_paths(state, {target}, 1, through_failed=True).get(target)
        if not found:
            return None
        absorbing = np.zeros(len(self.states), dtype=bool)
        absorbing[self.index[target]] = True
        i, j = self.index[state], self.index[target]
        within = transition_matrix(self._absorbing_generator(absorbing), horizon_s)[i, j]
        return Recovery(
            path=self._path(found[0], horizon_s),
            probability_eventually=self._absorption(i, j),
            probability_within_horizon=float(within),
        )

    def _absorption(self, i: int, j: int) -> float:
        """Return the probability that the jump chain from `i` ever reaches `j`."""
        n = len(self.states)
        others = [s for s in range(n) if s != j]
        p = self.jump_matrix[np.ix_(others, others)]
        to_target = self.jump_matrix[others, j]
        reach = np.linalg.lstsq(np.eye(n - 1) - p, to_target, rcond=None)[0]
        return float(min(max(reach[others.index(i)], 0.0), 1.0))

    def _reachable(self, start: str, through_failed: bool) -> set[str]:
        """Return the states the jump chain can reach from `start` (so that the path search
        never hunts for a target it cannot find)."""
        seen = {self.index[start]}
        todo = [self.index[start]]
        while todo:
            i = todo.pop()
            if i != self.index[start] and self.failed[i] and not through_failed:
                continue
            for j in np.flatnonzero(self.jump_matrix[i]):
                if int(j) not in seen:
                    seen.add(int(j))
                    todo.append(int(j))
        return {self.states[i] for i in seen if i != self.index[start]}

    def _best_paths(
        self, start: str, targets: set[str], k: int, through_failed: bool
    ) -> dict[str, list[tuple[float, tuple[int, ...]]]]:
        """Return up to `k` most probable simple paths from `start` to each target.

        Best-first over the jump chain with costs -log(probability): paths leave the heap
        in order of probability, so the first `k` to reach a target are its `k` best.
        """
        found: dict[str, list[tuple[float, tuple[int, ...]]]] = {t: [] for t in targets}
        heap: list[tuple[float, tuple[int, ...]]] = [(0.0, (self.index[start],))]
        expansions = 0
        while heap and expansions < MAX_PATH_EXPANSIONS:
            cost, path = heapq.heappop(heap)
            last = self.states[path[-1]]
            if last in targets and len(path) > 1:
                if len(found[last]) < k:
                    found[last].append((math.exp(-cost), path))
                if all(len(v) >= k for v in found.values()):
                    break
                continue
            if len(path) > 1 and last in FAILED_STATES and not through_failed:
                continue
            expansions += 1
            self._expand(heap, cost, path)
        return found

    def _expand(
        self, heap: list[tuple[float, tuple[int, ...]]], cost: float, path: tuple[int, ...]
    ) -> None:
        if len(path) >= MAX_PATH_STATES:
            return
        row = self.jump_matrix[path[-1]]
        for nxt in np.flatnonzero(row):
            if int(nxt) not in path:
                heapq.heappush(heap, (cost - math.log(row[nxt]), (*path, int(nxt))))

    def _path(self, found: tuple[float, tuple[int, ...]], horizon_s: float) -> Path:
        probability, path = found
        rates = self.exit_rates[list(path[:-1])]
        return Path(
            states=tuple(self.states[i] for i in path),
            probability=probability,
            probability_within_horizon=probability * _hypoexponential_cdf(rates, horizon_s),
            expected_duration_s=float(sum(1.0 / r for r in rates if r > 0)),
        )

    # Export -----------------------------------------------------------------------------------

    def export(
        self,
        horizon_s: float = DEFAULT_HORIZON_S,
        current_state: str | None = None,
        elapsed_s: float | None = None,
    ) -> dict[str, Any]:
        """Return the graph as plain data for drawing: nodes (state, visits, dwell, risk of a
        failure within the horizon, colour class, whether it is the current state) and edges
        (from, to, count, probability). Unknown figures are None, never NaN."""
        states = list(self.states)
        if current_state is not None and current_state not in self.index:
            states.append(current_state)
        risks = self._risks(horizon_s)
        nodes = [self._node(s, risks, horizon_s, current_state, elapsed_s) for s in states]
        edges = [
            {"from": src, "to": dst, "count": count, "probability": self.probability(src, dst)}
            for (src, dst), count in sorted(self.jumps.items())
        ]
        current = None
        if current_state is not None:
            current = {
                "state": current_state,
                "elapsed_s": elapsed_s,
                "risk": self.risk(current_state, horizon_s, elapsed_s),
            }
        return {"horizon_s": horizon_s, "nodes": nodes, "edges": edges, "current": current}

    def _risks(self, horizon_s: float) -> dict[str, float]:
        if not self.states:
            return {}
        reach = self._absorbing_exp(horizon_s)[:, self.failed].sum(axis=1)
        return {s: 1.0 if self.failed[i] else float(reach[i]) for i, s in enumerate(self.states)}

    def _node(
        self,
        state: str,
        risks: Mapping[str, float],
        horizon_s: float,
        current: str | None,
        elapsed_s: float | None,
    ) -> dict[str, Any]:
        is_current = state == current
        if is_current:
            risk = self.risk(state, horizon_s, elapsed_s)
        else:
            risk = 1.0 if state in FAILED_STATES else risks.get(state, 0.0)
        dwell = self.dwell(state) if state in self.index else None
        return {
            "state": state,
            "visits": self._tally.visits.get(state, 0),
            "self_loops": self._tally.self_loops.get(state, 0),
            "mean_dwell_s": dwell.mean_s if dwell else None,
            "median_dwell_s": dwell.median_s if dwell else None,
            "risk": risk,
            "colour": colour_class(state, risk),
            "current": is_current,
        }


def colour_class(state: str, risk: float) -> str:
    """Return the colour class of a node: failed, unknown, or its risk band."""
    if state in FAILED_STATES:
        return "failed"
    if state == UNKNOWN:
        return "unknown"
    if risk >= RISK_HIGH:
        return "risk_high"
    return "risk_medium" if risk >= RISK_MEDIUM else "risk_low"


# Numerics ------------------------------------------------------------------------------------


def transition_matrix(generator: np.ndarray, t: float) -> np.ndarray:
    """Return exp(generator x t) for a Markov generator (rows summing to 0, off-diagonal >= 0).

    Uniformization: with L >= every exit rate, exp(Qt) = sum_k Poisson(k; Lt) P^k where
    P = I + Q / L is stochastic. The time is first halved s times so that L t / 2^s <= 1 (a
    short, accurate series), then the result squared s times; every term is non-negative, so
    nothing cancels and rows stay probabilities.
    """
    n = len(generator)
    if n == 0 or t <= 0:
        return np.eye(n)
    rate = float(np.max(-np.diag(generator)))
    if rate <= 0:
        return np.eye(n)
    squarings = max(0, math.ceil(math.log2(rate * t)))
    lt = rate * t / 2**squarings
    step = np.eye(n) + generator / rate
    term = np.exp(-lt) * np.eye(n)
    result: np.ndarray = term.copy()
    for k in range(1, 30):
        term = term @ step * (lt / k)
        result += term
        if float(term.max()) < 1e-16:
            break
    for _ in range(squarings):
        result = result @ result
    return result


def _hypoexponential_cdf(rates: np.ndarray, t: float) -> float:
    """Return P(the sum of independent exponential stays with `rates` <= t): the chance a
    path's stays all end within `t` (a small chain through the stays, then absorbed)."""
    if len(rates) == 0:
        return 1.0
    if (rates <= 0).any():
        return 0.0
    k = len(rates)
    q = np.zeros((k + 1, k + 1))
    q[np.arange(k), np.arange(k)] = -rates
    q[np.arange(k), np.arange(1, k + 1)] = rates
    return float(min(max(transition_matrix(q, t)[0, k], 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class _Survival:
    """Kaplan-Meier survival of one state's stays: S(t) = P(a stay lasts longer than t)."""

    times: np.ndarray  # distinct durations at which stays ended, ascending
    surviving: np.ndarray  # S just after each of them

    @classmethod
    def fit(cls, stays: list[tuple[float, bool]]) -> _Survival | None:
        """Return the survival of `stays` (duration, ended), or None with too few ended."""
        if sum(1 for _, ended in stays if ended) < MIN_EMPIRICAL_STAYS:
            return None
        durations = np.array([d for d, _ in stays])
        ended = np.array([e for _, e in stays], dtype=bool)
        times = np.unique(durations[ended])
        at_risk = len(durations) - np.searchsorted(np.sort(durations), times, side="left")
        ends = np.array([np.count_nonzero(durations[ended] == t) for t in times])
        return cls(times, np.cumprod(1.0 - ends / at_risk))

    def at(self, t: float) -> float:
        i = int(np.searchsorted(self.times, t, side="right"))
        return 1.0 if i == 0 else float(self.surviving[i - 1])

    def at_many(self, t: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.times, t, side="right")
        padded = np.concatenate(([1.0], self.surviving))
        out: np.ndarray = padded[i]
        return out

    def quantile(self, q: float) -> float | None:
        """Return the time by which a share `q` of stays has ended, if the data reach it."""
        below = np.flatnonzero(self.surviving <= 1.0 - q)
        return float(self.times[below[0]]) if len(below) else None
