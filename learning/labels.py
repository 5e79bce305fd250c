"""Training labels for the learner: operators' decisions and verified outcomes, with the
context they were made in. Plain data; the control plane stores them as rows.

A context is coarse on purpose (failure type, lifecycle state, load) so that what is learnt on
one host carries to the others: a label is about "a KV-cache exhaustion on a serving host
with a long queue", not about gpu-07 at 14:02.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LABEL_KINDS = ("approved", "vetoed", "outcome")
QUEUED_AT = 50  # requests waiting from which a host counts as queued


@dataclass(frozen=True, slots=True)
class LearningContext:
    failure_type: str
    state: str  # lifecycle state, e.g. "serving", "failed_cuda_oom"
    load: str  # "idle", "busy" (requests running), "queued" (more than QUEUED_AT waiting)

    @property
    def key(self) -> str:
        return f"{self.failure_type}|{self.state}|{self.load}"

    @classmethod
    def from_key(cls, key: str) -> LearningContext:
        failure_type, state, load = key.split("|")
        return cls(failure_type, state, load)


def context_of(checkpoint: dict[str, Any], failure_type: str) -> LearningContext:
    """Return the learning context of a host's checkpoint (dict) for a failure type."""
    vllm = checkpoint.get("vllm") or {}
    waiting = vllm.get("requests_waiting") or 0
    running = vllm.get("requests_running") or 0
    load = "queued" if waiting > QUEUED_AT else "busy" if running > 0 else "idle"
    return LearningContext(failure_type, str(checkpoint.get("lifecycle_state") or "unknown"), load)


@dataclass(frozen=True, slots=True)
class Label:
    kind: str  # one of LABEL_KINDS
    context: LearningContext
    strategy: str
    at: float  # epoch s
    outcome: str | None = None  # for "outcome": success, no_effect, failure, made_worse
    execution_s: float | None = None
    confidence: float | None = None  # what the learner said when it proposed it
    vetoed: bool = False  # an outcome of a strategy an operator had vetoed (never, normally)
    next_context: LearningContext | None = None  # where the host was left, if not recovered
    auto_agreed: bool | None = None  # for an automatic decision: did the operator agree
    metrics: dict[str, float] | None = None  # key figures at the decision, for the record
