"""A host's lifecycle states over a window, as segments for the state timeline. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from agent.lifecycle import LifecycleState


@dataclass(frozen=True, slots=True)
class Segment:
    state: str
    start: datetime
    end: datetime
    left_pct: float
    width_pct: float

    @property
    def tone(self) -> str:
        """Return the colour family the page draws this state in."""
        return state_tone(self.state)


def state_tone(state: str) -> str:
    if state == LifecycleState.SERVING:
        return "ok"
    if state.startswith("failed_"):
        return "bad"
    if state == LifecycleState.DEGRADED:
        return "warn"
    if state in {s.value for s in LifecycleState if s.is_starting}:
        return "starting"
    return "idle"


def segments(
    transitions: Sequence[tuple[datetime, str, str]],
    *,
    start: datetime,
    end: datetime,
    current: str,
) -> list[Segment]:
    """Return the states between `start` and `end` from (at, from_state, to_state), oldest first.

    The state before the first transition in the window is that transition's from_state, or
    `current` when nothing changed in the window.
    """
    span = (end - start).total_seconds() or 1.0
    inside = sorted((t for t in transitions if start <= t[0] <= end), key=lambda t: t[0])
    state = inside[0][1] if inside else current
    result, since = [], start
    for at, _from, to in inside:
        result.append(_segment(state, since, at, start, span))
        state, since = to, at
    result.append(_segment(state, since, end, start, span))
    return [s for s in result if s.width_pct > 0]


def _segment(
    state: str, begin: datetime, finish: datetime, origin: datetime, span: float
) -> Segment:
    left = 100.0 * (begin - origin).total_seconds() / span
    width = 100.0 * (finish - begin).total_seconds() / span
    return Segment(state, begin, finish, round(left, 3), round(width, 3))
