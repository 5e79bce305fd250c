"""The continuous learning system: which mitigation to propose, and how sure to be. Pure.

It learns from labels (learning/labels.py): operators' approvals and vetoes, and the verified
outcome of every executed mitigation, each with its context (failure type, lifecycle state,
load). Five parts, combined by `recommend()`:

1. performance tracking   attempts, outcomes, execution time and effectiveness per strategy,
                          per context and overall;
2. Q-learning             a value per (context, strategy) from rewards, bootstrapped on the
                          context the host was left in when it did not recover;
3. Bayesian inference     Beta posteriors of success and of operator approval per (context,
                          strategy), backing off to the failure type when a context is new;
                          Thompson sampling ranks with them so untried strategies get tried;
4. rule extraction        readable rules from the counts ("when kv_cache_exhausted in serving
                          with waiting > 50, lower_max_num_seqs succeeds 92 % (n=38)");
5. the ensemble           one confidence = P(the operator would approve) x P(it works),
                          corrected by the reliability of past confidences (calibration).

The whole state is plain JSON (`to_dict` / `from_dict`), stored in the database.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from learning.labels import QUEUED_AT, Label, LearningContext

STATE_FORMAT = 1  # 1: 2026-11 first version

REWARD = {"success": 1.0, "no_effect": -0.2, "failure": -0.6, "made_worse": -1.0}
VETO_REWARD = -0.5  # an operator's veto is a preference, not a failure of the strategy
ALPHA, GAMMA = 0.2, 0.5  # Q-learning's step size and discount
PRIOR_STRENGTH = 5.0  # pseudo-observations the failure type's other contexts lend a context
RULE_MIN_N = 5
CALIBRATION_BINS = 10
MIN_BIN_N = 20  # a reliability bin corrects confidences only with this many outcomes


@dataclass
class Tally:
    """Counts for one strategy in one context (or at a coarser level)."""

    attempts: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    approvals: int = 0
    vetoes: int = 0
    execution_s: float = 0.0  # the sum, for the mean

    @property
    def successes(self) -> int:
        return self.outcomes.get("success", 0)

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.attempts if self.attempts else None

    @property
    def effectiveness(self) -> float | None:
        """The mean reward of its outcomes, -1 (made worse) to 1 (success)."""
        if not self.attempts:
            return None
        return sum(REWARD[o] * n for o, n in self.outcomes.items()) / self.attempts

    @property
    def mean_execution_s(self) -> float | None:
        return self.execution_s / self.attempts if self.attempts else None


@dataclass(frozen=True, slots=True)
class Recommendation:
    strategy: str
    confidence: float  # calibrated P(approved and it works)
    success: float  # posterior mean P(it works)
    approval: float  # posterior mean P(an operator approves it)
    q_value: float
    n: int  # outcomes seen in this context
    score: float  # what ranked it (a Thompson sample when exploring)
    why: str


@dataclass(frozen=True, slots=True)
class Rule:
    text: str
    failure_type: str
    state: str
    load: str
    strategy: str
    rate: float
    n: int
    kind: str  # "succeeds" or "vetoed"


class ContinuousLearningSystem:
    def __init__(self, prior: dict[str, Sequence[str]] | None = None) -> None:
        # failure type -> strategy names, best first: what the library suggests before any label
        self.prior = {k: list(v) for k, v in (prior or {}).items()}
        self.tallies: dict[str, dict[str, Tally]] = defaultdict(dict)  # level key -> strategy
        self.q: dict[str, dict[str, float]] = defaultdict(dict)  # context key -> strategy -> Q
        self.calibration: list[list[float]] = [[0.0, 0.0, 0.0] for _ in range(CALIBRATION_BINS)]
        self.labels_seen = 0
        self.auto_agreement = [0, 0]  # automatic decisions the operator agreed with, of all

    # ------------------------------------------------------------------ learning

    def learn(self, label: Label) -> None:
        """Take one label: an approval, a veto, or a verified outcome."""
        self.labels_seen += 1
        for key in _levels(label.context):
            tally = self.tallies[key].setdefault(label.strategy, Tally())
            if label.kind == "approved":
                tally.approvals += 1
            elif label.kind == "vetoed":
                tally.vetoes += 1
            elif label.kind == "outcome" and label.outcome in REWARD:
                tally.attempts += 1
                tally.outcomes[label.outcome] = tally.outcomes.get(label.outcome, 0) + 1
                tally.execution_s += label.execution_s or 0.0
        if label.kind == "outcome" and label.outcome in REWARD:
            self._q_update(label, REWARD[label.outcome])
            if label.confidence is not None:
                self._calibrate(label.confidence, label.outcome == "success" and not label.vetoed)
        elif label.kind == "vetoed":
            self._q_update(label, VETO_REWARD)
            if label.confidence is not None:
                self._calibrate(label.confidence, False)
        if label.auto_agreed is not None:
            self.auto_agreement[0] += int(label.auto_agreed)
            self.auto_agreement[1] += 1

    def learn_all(self, labels: Iterable[Label]) -> None:
        for label in labels:
            self.learn(label)

    def _q_update(self, label: Label, reward: float) -> None:
        row = self.q[label.context.key]
        nxt = label.next_context
        future = max(self.q[nxt.key].values(), default=0.0) if nxt is not None else 0.0
        old = row.get(label.strategy, 0.0)
        row[label.strategy] = old + ALPHA * (reward + GAMMA * future - old)

    def _calibrate(self, confidence: float, good: bool) -> None:
        b = min(int(confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1)
        cell = self.calibration[b]
        cell[0] += 1
        cell[1] += confidence
        cell[2] += float(good)

    # ------------------------------------------------------------------ deciding

    def recommend(
        self,
        context: LearningContext,
        candidates: Sequence[str],
        *,
        explore: bool = False,
        rng: random.Random | None = None,
    ) -> list[Recommendation]:
        """Return `candidates` ranked for `context`, best first, with calibrated confidences.

        `explore` ranks by a Thompson sample of the posteriors instead of their means, so a
        strategy with few outcomes still gets proposed now and then; the confidences stay the
        posterior means either way (what the automatic-execution gate compares)."""
        rng = rng or random.Random()
        found = []
        for rank, strategy in enumerate(candidates):
            s_a, s_b = self._beta(context, strategy, "success", rank)
            a_a, a_b = self._beta(context, strategy, "approval", rank)
            success, approval = s_a / (s_a + s_b), a_a / (a_a + a_b)
            q = self.q.get(context.key, {}).get(strategy, 0.0)
            confidence = self.calibrated(success * approval)
            if explore:
                score = rng.betavariate(s_a, s_b) * rng.betavariate(a_a, a_b)
            else:
                score = confidence + 0.05 * q  # Q breaks ties toward what recovered hosts
            tally = self.tallies.get(context.key, {}).get(strategy, Tally())
            found.append(Recommendation(
                strategy, confidence, success, approval, q, tally.attempts, score,
                _why(strategy, tally, success, approval),
            ))  # fmt: skip
        return sorted(found, key=lambda r: -r.score)

    def _beta(
        self, context: LearningContext, strategy: str, what: str, rank: int
    ) -> tuple[float, float]:
        """Return the Beta posterior of success or approval, with the failure type's counts
        (and the library's order, before any) as the prior for a context seen little."""
        prior_a, prior_b = _library_prior(rank, len(self.prior.get(context.failure_type, ())))
        exact = self.tallies.get(context.key, {}).get(strategy)
        hits, total = _counts(exact, what) if exact is not None else (0, 0)
        broad = self.tallies.get(context.failure_type, {}).get(strategy)
        if broad is not None:
            b_hits, b_total = _counts(broad, what)
            b_hits, b_total = b_hits - hits, b_total - total  # the other contexts only
            if b_total:
                share = b_hits / b_total
                prior_a, prior_b = 1 + PRIOR_STRENGTH * share, 1 + PRIOR_STRENGTH * (1 - share)
        return prior_a + hits, prior_b + total - hits

    def calibrated(self, confidence: float) -> float:
        """Return `confidence` corrected by how often past ones in its bin came true."""
        b = min(int(confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1)
        n, _, good = self.calibration[b]
        if n < MIN_BIN_N:
            return confidence
        weight = n / (n + MIN_BIN_N)
        return (1 - weight) * confidence + weight * good / n

    # ------------------------------------------------------------------ the seed's calls

    def get_learning_recommendations(
        self,
        state: Any,
        errors: Sequence[str],
        metrics: dict[str, float],
        candidates: Sequence[str] | None = None,
    ) -> list[Recommendation]:
        """Recommendations for a host in lifecycle `state` (an enum or its value) with these
        errors (failure types, or error categories such as "cuda_oom") and metrics (e.g.
        {"requests_waiting": 80}); the seed's entry point, over `recommend()`."""
        failure_type = next((e for e in errors if e in self.prior), errors[0] if errors else "")
        waiting = float(metrics.get("requests_waiting") or 0.0)
        running = float(metrics.get("requests_running") or 0.0)
        load = "queued" if waiting > QUEUED_AT else "busy" if running > 0 else "idle"
        name = str(getattr(state, "value", state)).lower()
        context = LearningContext(failure_type, name, load)
        names = candidates if candidates is not None else self.prior.get(failure_type, [])
        return self.recommend(context, list(names))

    def record_attempt(self, attempt: Label) -> None:
        """The seed's name for learning from one mitigation attempt (a label)."""
        self.learn(attempt)

    # ------------------------------------------------------------------ reading

    def rules(self, min_n: int = RULE_MIN_N) -> list[Rule]:
        """Return readable rules from the per-context counts, the best supported first."""
        found = []
        for key, by_strategy in self.tallies.items():
            parts = key.split("|")
            if len(parts) != 3:
                continue
            failure_type, state, load = parts
            where = f"when {failure_type} in {state}{_load_words(load)}"
            for strategy, t in by_strategy.items():
                if t.attempts >= min_n:
                    rate = t.successes / t.attempts
                    text = f"{where}, {strategy} succeeds {100 * rate:.0f} % (n={t.attempts})"
                    found.append(Rule(text, failure_type, state, load, strategy, rate,
                                      t.attempts, "succeeds"))  # fmt: skip
                decided = t.approvals + t.vetoes
                if decided >= min_n and t.vetoes / decided >= 0.8:
                    rate = t.vetoes / decided
                    text = f"{where}, operators veto {strategy} {100 * rate:.0f} % (n={decided})"
                    found.append(Rule(text, failure_type, state, load, strategy, rate, decided,
                                      "vetoed"))  # fmt: skip
        return sorted(found, key=lambda r: (-r.n, -r.rate))

    def performance(self, level: str | None = None) -> dict[str, Tally]:
        """Return the tallies per strategy at a level ("" = overall, a failure type, or a
        context key)."""
        return dict(self.tallies.get("" if level is None else level, {}))

    def reliability(self) -> list[dict[str, float]]:
        """Return the calibration table: per bin, the mean confidence and the observed rate."""
        table = []
        for b, (n, conf, good) in enumerate(self.calibration):
            if n:
                table.append({"bin": b / CALIBRATION_BINS, "n": n, "confidence": conf / n,
                              "observed": good / n})  # fmt: skip
        return table

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "prior": self.prior,
            "tallies": {k: {s: asdict(t) for s, t in v.items()} for k, v in self.tallies.items()},
            "q": {k: dict(v) for k, v in self.q.items()},
            "calibration": self.calibration,
            "labels_seen": self.labels_seen,
            "auto_agreement": self.auto_agreement,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContinuousLearningSystem:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"learner state format {data.get('format')!r}, not {STATE_FORMAT}")
        learner = cls(data.get("prior") or {})
        for key, by_strategy in (data.get("tallies") or {}).items():
            learner.tallies[key] = {s: Tally(**t) for s, t in by_strategy.items()}
        for key, row in (data.get("q") or {}).items():
            learner.q[key] = {s: float(v) for s, v in row.items()}
        learner.calibration = [list(map(float, c)) for c in data.get("calibration") or []] or (
            learner.calibration
        )
        learner.labels_seen = int(data.get("labels_seen") or 0)
        learner.auto_agreement = list(data.get("auto_agreement") or [0, 0])
        return learner


def _levels(context: LearningContext) -> tuple[str, ...]:
    """The keys a label counts under: overall, its failure type, its full context."""
    return ("", context.failure_type, context.key)


def _counts(tally: Tally, what: str) -> tuple[int, int]:
    if what == "success":
        return tally.successes, tally.attempts
    return tally.approvals, tally.approvals + tally.vetoes


def _library_prior(rank: int, listed: int) -> tuple[float, float]:
    """Beta prior from the library's order: its first suggestion leans to yes, later ones less."""
    if rank >= max(listed, 1):
        return 1.0, 1.5
    lean = 1.0 - rank / (2 * max(listed, 1))
    return 1.0 + lean, 1.0


def _load_words(load: str) -> str:
    return {"queued": " with waiting > 50", "busy": " with requests running", "idle": " idle"}.get(
        load, ""
    )


def _why(strategy: str, tally: Tally, success: float, approval: float) -> str:
    if not tally.attempts and not (tally.approvals + tally.vetoes):
        return f"no history here yet: the library's order (P(works) {success:.2f})"
    parts = []
    if tally.attempts:
        parts.append(f"worked {tally.successes} of {tally.attempts} times here")
    decided = tally.approvals + tally.vetoes
    if decided:
        parts.append(f"approved {tally.approvals} of {decided}")
    return "; ".join(parts) + f" (P(works) {success:.2f}, P(approved) {approval:.2f})"
