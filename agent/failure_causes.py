"""Which classified error caused a failure.

vLLM reports one failure several times: the root cause (a CUDA OOM in a worker, an NCCL
watchdog timeout), then the engine's death (`EngineCore encountered a fatal error.`,
`EngineDeadError`), then its exit. The exception monitor classifies each traceback as it
ends, so the root cause may arrive before or after the lines that say the engine died.
Errors that do not (yet) belong to a failure are kept here for a while; when a failure
comes, the earliest of them names its cause.
"""

from __future__ import annotations

from agent.checkpoint import ErrorEvent
from agent.lifecycle import FAILED_STATE_BY_CATEGORY, LifecycleState

# An error this much older than a failure did not cause it.
ROOT_CAUSE_WINDOW_S = 120.0

# Failed states that say the engine died but not why: a root cause found later replaces them.
CAUSELESS_STATES = frozenset({LifecycleState.FAILED_ENGINE_DEAD, LifecycleState.FAILED_OTHER})


def cause_of(error: ErrorEvent) -> LifecycleState | None:
    """Return the failed state `error` names as a cause, or None when it names none.

    Request-level errors never end the server; `engine_dead` is the death itself and
    `other` is unclassified: neither says why the engine died.
    """
    state = FAILED_STATE_BY_CATEGORY.get(error.category)
    return None if state is None or state in CAUSELESS_STATES else state


class RecentCauses:
    def __init__(self, window_s: float = ROOT_CAUSE_WINDOW_S) -> None:
        self.window_s = window_s
        self._errors: list[tuple[float, ErrorEvent]] = []

    def note(self, error: ErrorEvent, at: float) -> None:
        """Keep `error`, seen at `at` (epoch s), as a possible cause of a coming failure."""
        self._errors.append((at, error))
        self._errors = [(t, e) for t, e in self._errors if t >= at - self.window_s]

    def root_before(self, at: float) -> ErrorEvent | None:
        """Return the earliest kept error that could have caused a failure at `at`."""
        for seen_at, error in sorted(self._errors, key=lambda pair: pair[0]):
            if seen_at >= at - self.window_s:
                return error
        return None

    def clear(self) -> None:
        self._errors.clear()
