"""A stand-in vLLM on a real loopback HTTP server, serving recorded /metrics text."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from agent.agent import Agent
from agent.config import AgentConfig

DATA = Path(__file__).resolve().parent.parent / "data"
SAMPLE = (DATA / "vllm-metrics-sample.prom").read_text()
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
TOKEN = "agent-test-token-0123456789"


def series(name: str, **labels: str) -> str:
    """Return `name{labels}` as vLLM writes it: labels sorted, engine 0, the sample's model."""
    labels = {"engine": "0", "model_name": MODEL, **labels}
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def bump(text: str, increments: dict[str, float]) -> str:
    """Return `text` with the value of each series in `increments` raised by its amount."""
    lines = text.splitlines()
    for key, amount in increments.items():
        matches = [i for i, line in enumerate(lines) if line.startswith(key + " ")]
        assert len(matches) == 1, f"{key} matches {len(matches)} lines"
        i = matches[0]
        lines[i] = f"{key} {float(lines[i][len(key) + 1 :]) + amount!r}"
    return "\n".join(lines) + "\n"


class FakeVllm:
    """What a vLLM server answers on /metrics and /health, set by each test."""

    def __init__(self) -> None:
        self.metrics_text = SAMPLE
        self.health_status = 200
        self.health_body = b""
        self.metrics_delay_s = 0.0
        self.hang = False  # accept connections, never answer
        self.metrics_hits = 0
        self.released = asyncio.Event()
        self.url = ""

    async def metrics(self, request: web.Request) -> web.Response:
        self.metrics_hits += 1
        await self._maybe_hang()
        if self.metrics_delay_s:
            await asyncio.sleep(self.metrics_delay_s)
        return web.Response(text=self.metrics_text, content_type="text/plain", charset="utf-8")

    async def health(self, request: web.Request) -> web.Response:
        await self._maybe_hang()
        return web.Response(status=self.health_status, body=self.health_body)

    async def _maybe_hang(self) -> None:
        if self.hang:
            await self.released.wait()


@pytest.fixture
async def fake_vllm() -> AsyncIterator[FakeVllm]:
    fake = FakeVllm()
    app = web.Application()
    app.router.add_get("/metrics", fake.metrics)
    app.router.add_get("/health", fake.health)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    fake.released.set()
    await runner.cleanup()


def make_config(url: str, **overrides: object) -> AgentConfig:
    settings: dict[str, object] = {
        "host_name": "gpu-01",
        "token": TOKEN,
        "vllm_url": url,
        "gpu_backend": "none",
        "scrape_timeout_s": 1.0,
    }
    settings.update(overrides)
    return AgentConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def make_agent() -> AsyncIterator[Callable[..., Agent]]:
    """Return a factory of agents watching this test process as "the vLLM process"."""
    agents: list[Agent] = []

    def factory(
        url: str, *, nvml: object = None, process: object = None, **overrides: object
    ) -> Agent:
        source = process if process is not None else psutil.Process(os.getpid())
        agent = Agent(make_config(url, **overrides), nvml=nvml, process_source=source)
        agents.append(agent)
        return agent

    yield factory
    for agent in agents:
        await agent.close()
