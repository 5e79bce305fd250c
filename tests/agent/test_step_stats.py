"""The agent's receiver of the vLLM plugin's step datagrams."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from agent.checkpoint import Steps
from agent.step_stats import StepStatsReceiver
from agent.vllm_plugin import StepReporter


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def datagram(**changes: Any) -> bytes:
    fields = {
        "v": 1,
        "engine": 0,
        "steps": 4,
        "first_t": 1000.0,
        "last_t": 1000.1,
        "gap_max_s": 0.04,
        "tokens": 400,
        "preempted": 1,
        "kv_max_pct": 61.5,
        "running_max": 96,
        "waiting_max": 2,
        "running_last": 96,
        **changes,
    }
    return json.dumps(fields).encode()


@pytest.fixture
async def receiver() -> AsyncIterator[StepStatsReceiver]:
    r = StepStatsReceiver()
    await r.start("127.0.0.1", 0)
    yield r
    r.close()


async def _until(condition: Any, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def _step(running: int, generated: int) -> tuple[SimpleNamespace, SimpleNamespace]:
    scheduler = SimpleNamespace(num_running_reqs=running, num_waiting_reqs=0, kv_cache_usage=0.3)
    iteration = SimpleNamespace(
        num_generation_tokens=generated,
        prompt_token_stats=SimpleNamespace(computed=0),
        num_preempted_reqs=0,
    )
    return scheduler, iteration


async def test_it_sums_what_the_plugin_sends_into_steps(receiver: StepStatsReceiver) -> None:
    assert receiver.port is not None
    clock = Clock()
    reporter = StepReporter(receiver.port, clock=clock, flush_interval_s=0.1)
    for step in range(10):
        clock.t = 1000.0 + 0.03 * step
        reporter.record(*_step(running=8, generated=8))
    reporter.record(*_step(running=0, generated=2))  # the last request finishes
    reporter.close()
    await _until(lambda: receiver.received == 3)

    steps = receiver.take(now=2000.0)

    assert steps == Steps(
        steps=11,
        step_interval_max_s=pytest.approx(0.03),
        tokens_per_step_mean=pytest.approx(82 / 11),
        preempted=0,
        kv_cache_usage_pct_max=30.0,
        running_max=8,
        waiting_max=0,
    )
    # The engine went idle: a quiet interval after that says nothing.
    assert receiver.take(now=2010.0) is None


def test_it_returns_none_when_no_plugin_reported() -> None:
    assert StepStatsReceiver(clock=Clock()).take() is None


def test_it_measures_the_gaps_between_datagrams_of_a_working_engine() -> None:
    receiver = StepStatsReceiver()
    receiver.receive(datagram(first_t=1000.0, last_t=1000.1))
    receiver.receive(datagram(first_t=1002.6, last_t=1002.7))  # 2.5 s without a step
    receiver.receive(datagram(engine=1, first_t=1000.0, last_t=1000.05))

    steps = receiver.take(now=1002.75)
    assert steps is not None
    assert steps.step_interval_max_s == pytest.approx(2.7)  # engine 1: no step since 1000.05
    assert (steps.steps, steps.preempted, steps.running_max) == (12, 3, 96)


def test_it_reports_an_engine_stuck_with_requests_running() -> None:
    receiver = StepStatsReceiver()
    receiver.receive(datagram(last_t=1000.1, running_last=12))
    receiver.take(now=1001.0)

    steps = receiver.take(now=1030.1)  # no datagram since: the engine is wedged

    assert steps == Steps(steps=0, step_interval_max_s=pytest.approx(30.0))


def test_it_does_not_count_an_idle_engine_as_stuck() -> None:
    receiver = StepStatsReceiver()
    receiver.receive(datagram(last_t=1000.1, running_last=0))
    receiver.take(now=1001.0)
    receiver.receive(datagram(first_t=1600.0, last_t=1600.1, steps=1, running_last=1))

    steps = receiver.take(now=1600.2)
    assert steps is not None
    assert steps.step_interval_max_s == pytest.approx(0.1)  # not the 600 s of idling


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        datagram(v=2),
        datagram(steps=0),
        datagram(tokens=-5),
        datagram(kv_max_pct=140.0),
        datagram(running_last="many"),
        datagram(first_t=1000.2, last_t=1000.1),
        b'{"v": 1}',
        datagram(padding="x" * 5000),
    ],
)
def test_it_ignores_and_counts_malformed_datagrams(data: bytes) -> None:
    receiver = StepStatsReceiver()
    receiver.receive(data)

    assert (receiver.malformed, receiver.received) == (1, 0)
    assert receiver.take(now=1001.0) is None
    receiver.receive(datagram())
    assert receiver.received == 1


async def test_it_keeps_receiving_after_garbage_over_the_network(
    receiver: StepStatsReceiver,
) -> None:
    assert receiver.port is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"garbage", ("127.0.0.1", receiver.port))
        sender.sendto(datagram(), ("127.0.0.1", receiver.port))
        await _until(lambda: receiver.received == 1)

    assert receiver.malformed == 1
    steps = receiver.take(now=1000.2)
    assert steps is not None and steps.steps == 4


async def test_it_stops_listening_when_closed() -> None:
    receiver = StepStatsReceiver()
    await receiver.start("127.0.0.1", 0)
    port = receiver.port
    receiver.close()
    await asyncio.sleep(0)

    # The port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port or 0))
