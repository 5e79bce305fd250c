"""Receive the vLLM plugin's per-step datagrams (agent/vllm_plugin.py) and sum them per checkpoint.

`StepStatsReceiver` is an asyncio UDP endpoint in the agent. Every datagram is folded into the
running interval as it arrives; `take()` returns that interval as `Steps` and starts the
next. A malformed datagram is counted in `malformed` and otherwise ignored.

The longest gap between two engine steps is the plugin's liveness signal: it is measured
inside datagrams, between consecutive datagrams of an engine, and, at `take()`, from an
engine's last step to now while that step left requests running (an engine stuck mid-work
sends nothing at all). Gaps after a step that left the engine idle do not count: an idle
engine does not step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from agent.checkpoint import Steps
from agent.vllm_plugin import AGENT_HOST, DEFAULT_STATS_PORT

N = TypeVar("N", int, float)

MAX_DATAGRAM_BYTES = 4096
# An engine silent this long is gone (stopped, restarted elsewhere): forget its last step.
FORGET_ENGINE_AFTER_S = 600.0

_NonNeg = Annotated[float, msgspec.Meta(ge=0)]
_Count = Annotated[int, msgspec.Meta(ge=0)]


class _Datagram(msgspec.Struct, forbid_unknown_fields=False):
    v: Literal[1]
    engine: _Count
    steps: Annotated[int, msgspec.Meta(ge=1)]
    first_t: float
    last_t: float
    gap_max_s: _NonNeg
    tokens: _Count
    preempted: _Count
    kv_max_pct: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    running_max: _Count | None = None
    waiting_max: _Count | None = None
    running_last: _Count | None = None


_DECODER = msgspec.json.Decoder(_Datagram)


@dataclass(slots=True)
class _LastStep:
    at: float
    running: int  # requests running after it


@dataclass(slots=True)
class _Interval:
    steps: int = 0
    gap_max_s: float | None = None
    tokens: int = 0
    preempted: int = 0
    kv_max_pct: float | None = None
    running_max: int | None = None
    waiting_max: int | None = None

    def widen_gap(self, gap_s: float) -> None:
        self.gap_max_s = max(gap_s, self.gap_max_s or 0.0)


class StepStatsReceiver:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.received = 0
        self.malformed = 0
        self.port: int | None = None  # the bound port, once started
        self._clock = clock
        self._interval = _Interval()
        self._last: dict[int, _LastStep] = {}
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, host: str = AGENT_HOST, port: int = DEFAULT_STATS_PORT) -> None:
        """Listen for datagrams on `host`:`port` (UDP; port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def receive(self, data: bytes) -> None:
        """Fold one datagram into the current interval; count it if it is malformed."""
        datagram = _decode(data)
        if datagram is None:
            self.malformed += 1
            return
        self.received += 1
        self._fold(datagram)

    def take(self, now: float | None = None) -> Steps | None:
        """Return the interval since the last call and start a new one; None when no plugin
        reported and no engine is left mid-work (nothing to say)."""
        now = self._clock() if now is None else now
        interval, self._interval = self._interval, _Interval()
        self._widen_to_now(interval, now)
        if interval.steps == 0 and interval.gap_max_s is None:
            return None
        return Steps(
            steps=interval.steps,
            step_interval_max_s=interval.gap_max_s,
            tokens_per_step_mean=interval.tokens / interval.steps if interval.steps else None,
            preempted=interval.preempted,
            kv_cache_usage_pct_max=interval.kv_max_pct,
            running_max=interval.running_max,
            waiting_max=interval.waiting_max,
        )

    def _fold(self, d: _Datagram) -> None:
        interval = self._interval
        before = self._last.get(d.engine)
        if before is not None and before.running > 0 and d.first_t >= before.at:
            interval.widen_gap(d.first_t - before.at)
        if d.steps > 1:
            interval.widen_gap(d.gap_max_s)
        interval.steps += d.steps
        interval.tokens += d.tokens
        interval.preempted += d.preempted
        interval.kv_max_pct = _max(interval.kv_max_pct, d.kv_max_pct)
        interval.running_max = _max(interval.running_max, d.running_max)
        interval.waiting_max = _max(interval.waiting_max, d.waiting_max)
        if before is None or d.last_t >= before.at:
            running = d.running_last if d.running_last is not None else 0
            self._last[d.engine] = _LastStep(d.last_t, running)

    def _widen_to_now(self, interval: _Interval, now: float) -> None:
        for engine, last in list(self._last.items()):
            if now - last.at > FORGET_ENGINE_AFTER_S:
                del self._last[engine]
            elif last.running > 0:
                interval.widen_gap(max(0.0, now - last.at))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: StepStatsReceiver) -> None:
        self._receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._receiver.receive(data)


def _decode(data: bytes) -> _Datagram | None:
    if len(data) > MAX_DATAGRAM_BYTES:
        return None
    try:
        datagram = _DECODER.decode(data)
    except msgspec.DecodeError:  # also covers ValidationError
        return None
    return datagram if datagram.last_t >= datagram.first_t else None


def _max(current: N | None, new: N | None) -> N | None:
    if new is None:
        return current
    return new if current is None else max(current, new)
