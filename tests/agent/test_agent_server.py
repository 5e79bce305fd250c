"""The agent's HTTP API: bearer token on every path, checkpoints, coalesced collections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from agent import AGENT_VERSION
from agent.agent import Agent
from agent.checkpoint import decode
from agent.server import start_server
from tests.agent.conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def served(fake_vllm, make_agent) -> AsyncIterator[tuple[Agent, str]]:  # type: ignore[no-untyped-def]
    agent = make_agent(fake_vllm.url)
    runner, port = await start_server(agent, "127.0.0.1", 0)
    yield agent, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.read()


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"bearer {TOKEN}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer \u00e9t\u00e9"},
    ],
)
async def test_it_refuses_requests_without_the_right_token(served, headers) -> None:  # type: ignore[no-untyped-def]
    agent, base = served
    for path in ("/v1/checkpoint", "/v1/healthz", "/v1/nowhere"):
        status, body = await _get(base + path, headers)
        assert (status, body) == (401, b'{"error":"unauthorized"}'), path
    assert agent.seq == 0  # nothing was collected for them


async def test_it_serves_a_valid_checkpoint_with_the_right_token(served, fake_vllm) -> None:  # type: ignore[no-untyped-def]
    _, base = served
    status, body = await _get(base + "/v1/checkpoint", AUTH)

    assert status == 200
    cp = decode(body)
    assert (cp.host, cp.seq, cp.lifecycle_state) == ("gpu-01", 1, "serving")
    assert cp.vllm is not None and cp.vllm.requests_running == 96


async def test_it_answers_healthz_with_host_version_and_seq(served) -> None:  # type: ignore[no-untyped-def]
    _, base = served
    await _get(base + "/v1/checkpoint", AUTH)
    status, body = await _get(base + "/v1/healthz", AUTH)

    assert status == 200
    assert json.loads(body) == {"ok": True, "host": "gpu-01", "version": AGENT_VERSION, "seq": 1}


async def test_it_shares_one_collection_among_concurrent_polls(served, fake_vllm) -> None:  # type: ignore[no-untyped-def]
    agent, base = served
    fake_vllm.metrics_delay_s = 0.2
    results = await asyncio.gather(*(_get(base + "/v1/checkpoint", AUTH) for _ in range(20)))

    assert {status for status, _ in results} == {200}
    assert {decode(body).seq for _, body in results} == {1}
    assert fake_vllm.metrics_hits == 1 and agent.seq == 1

    # Once it is done, the next poll collects afresh.
    status, body = await _get(base + "/v1/checkpoint", AUTH)
    assert (status, decode(body).seq, fake_vllm.metrics_hits) == (200, 2, 2)


async def test_it_finishes_a_shared_collection_when_one_poller_gives_up(served, fake_vllm) -> None:  # type: ignore[no-untyped-def]
    agent, _ = served
    fake_vllm.metrics_delay_s = 0.2
    impatient = asyncio.ensure_future(agent.collect())
    patient = asyncio.ensure_future(agent.collect())
    await asyncio.sleep(0.05)
    impatient.cancel()
    cp = await patient

    assert cp.seq == 1 and cp.vllm is not None and cp.vllm.requests_running == 96


async def test_it_reports_the_port_it_bound(make_agent, fake_vllm) -> None:  # type: ignore[no-untyped-def]
    runner, port = await start_server(make_agent(fake_vllm.url), "127.0.0.1", 0)
    try:
        assert port > 0
        status, _ = await _get(f"http://127.0.0.1:{port}/v1/healthz", AUTH)
        assert status == 200
    finally:
        await runner.cleanup()
