"""The agent's clock: where every timestamp and every interval it measures comes from.

A real agent reads the machine's clocks (`SystemClock`). The simulator hands its agents the
fleet's simulated clock instead, so that with `speed=0` a checkpoint carries the simulated
time and its rates are per simulated second.

    time()       epoch seconds: checkpoints' `collected_at`, events' `at`, log lines' `at`
    monotonic()  seconds from an arbitrary start, never going back: intervals between scrapes
                 (rates, latency windows), CPU %, stall timing, retry pacing

Waiting (timeouts, sleeps) stays on the event loop's real clock: a clock says what time it
is, it does not make time pass.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Return the time in epoch seconds."""
        ...

    def monotonic(self) -> float:
        """Return seconds from an arbitrary start; never less than an earlier answer."""
        ...


class SystemClock:
    """The machine's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
