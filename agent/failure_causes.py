"""Which classified error caused a failure.

vLLM reports one failure several times: the root cause (a CUDA OOM in a worker, an NCCL
watchdog timeout), then the engine's death (`EngineCore encountered a fatal error.`,
`EngineDeadError`), then its exit. Before it there may be precursors that are errors too:
the shared-memory broadcast warning of a hang, which also fires harmlessly during long
compiles, or V0's preemption warnings. The exception monitor reports each traceback once it
ends, so the root cause may arrive before or after the lines that say the engine died.

Errors are kept here until a failure comes, for ROOT_CAUSE_WINDOW_S. The cause of a failure
is the strongest of them, and among equals the one closest to the failure: a specific error
(an OOM, NCCL, a GPU fault, the model or the configuration, ...) beats a hang or KV-cache
exhaustion, whose signs also show up in servers that survive them.
"""

from __future__ import annotations

from agent.checkpoint import ErrorEvent
from agent.lifecycle import FAILED_STATE_BY_CATEGORY, LifecycleState

# An error this far from a failure did not cause it.
ROOT_CAUSE_WINDOW_S = 120.0

# Failed states that say the engine died but not why: a cause found later replaces them.
CAUSELESS_STATES = frozenset({LifecycleState.FAILED_ENGINE_DEAD, LifecycleState.FAILED_OTHER})
# Causes whose signs precede failures of other causes too: a specific cause replaces them.
WEAK_CAUSES = frozenset({LifecycleState.FAILED_HANG, LifecycleState.FAILED_KV_CACHE_EXHAUSTED})


def cause_of(error: ErrorEvent) -> LifecycleState | None:
    """Return the failed state `error` names as a cause, or None when it names none.

    Request-level errors never end the server; `engine_dead` is the death itself and
    `other` is unclassified: neither says why the engine died.
    """
    state = FAILED_STATE_BY_CATEGORY.get(error.category)
    return None if state is None or state in CAUSELESS_STATES else state


def strength(state: LifecycleState) -> int:
    """Return how much a failed state says about the cause: 0 nothing, 1 a little, 2 it."""
    if state in CAUSELESS_STATES:
        return 0
    return 1 if state in WEAK_CAUSES else 2


class RecentCauses:
    def __init__(self, window_s: float = ROOT_CAUSE_WINDOW_S) -> None:
        self.window_s = window_s
        self._errors: list[tuple[float, ErrorEvent, LifecycleState]] = []

    def note(self, error: ErrorEvent, at: float) -> None:
        """Keep `error`, seen at `at` (epoch s), if it names a cause a failure could have."""
        cause = cause_of(error)
        if cause is None:
            return
        self._errors = [e for e in self._errors if e[0] >= at - self.window_s]
        self._errors.append((at, error, cause))

    def cause_at(self, at: float) -> tuple[LifecycleState, ErrorEvent] | None:
        """Return the cause of a failure at `at` and the error that names it, if any."""
        near = [e for e in self._errors if abs(e[0] - at) <= self.window_s]
        if not near:
            return None
        _, error, cause = max(near, key=lambda e: (strength(e[2]), -abs(e[0] - at)))
        return cause, error

    def clear(self) -> None:
        self._errors.clear()
