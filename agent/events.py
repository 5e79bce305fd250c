"""The agent's recent events, numbered, so a poll can ask for what it has not seen yet.

Transitions, errors, GPU events and validation reports share one counter per agent run.
The control plane sends `events_since=<the highest id it stored>` with each poll; an answer
lost on the way is simply sent again. Old events fall off the end of a bounded buffer.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import TypeVar

from agent.checkpoint import ErrorEvent, GpuEvent, Transition, ValidationReport

MAX_EVENTS = 2000

Event = Transition | ErrorEvent | GpuEvent | ValidationReport
E = TypeVar("E", Transition, ErrorEvent, GpuEvent, ValidationReport)


@dataclass(slots=True)
class EventBatch:
    transitions: list[Transition] = field(default_factory=list)
    errors: list[ErrorEvent] = field(default_factory=list)
    gpu_events: list[GpuEvent] = field(default_factory=list)
    validations: list[ValidationReport] = field(default_factory=list)


class EventLog:
    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self._ids = itertools.count(1)
        self._events: deque[Event] = deque(maxlen=max_events)
        self.last_id = 0

    def add(self, event: E) -> E:
        """Store `event` under the next id and return it (with that id)."""
        numbered = dataclasses.replace(event, id=next(self._ids))
        self._events.append(numbered)
        self.last_id = numbered.id
        return numbered

    def since(self, event_id: int) -> EventBatch:
        """Return the kept events with an id above `event_id`, oldest first, by kind."""
        batch = EventBatch()
        for event in self._events:
            if event.id > event_id:
                _list_for(batch, event).append(event)
        return batch


def _list_for(batch: EventBatch, event: Event) -> list[Event]:
    if isinstance(event, Transition):
        return batch.transitions  # type: ignore[return-value]
    if isinstance(event, ErrorEvent):
        return batch.errors  # type: ignore[return-value]
    if isinstance(event, GpuEvent):
        return batch.gpu_events  # type: ignore[return-value]
    return batch.validations  # type: ignore[return-value]
