from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from agent.checkpoint import encode
from monitor.models import Host
from tests.factories import make_checkpoint

TOKEN = "s3cret-token"


class AgentStandIns:
    """Agents at the edge, misbehaving on purpose, on a real loopback HTTP server.

    Each behaviour lives under its own path prefix: http://127.0.0.1:PORT/<behaviour>/.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.checkpoints: dict[str, dict] = {}  # host name -> make_checkpoint overrides
        self.slow_s = 5.0
        self.asked_since: dict[str, list[str]] = {}  # host name -> events_since of each poll

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/good/{host}/v1/checkpoint", self.good)
        app.router.add_get("/garbage/v1/checkpoint", self.garbage)
        app.router.add_get("/invalid/v1/checkpoint", self.invalid)
        app.router.add_get("/slow/v1/checkpoint", self.slow)
        app.router.add_get("/huge/v1/checkpoint", self.huge)
        app.router.add_get("/error/v1/checkpoint", self.error)
        return app

    async def good(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401)
        host = request.match_info["host"]
        self.asked_since.setdefault(host, []).append(request.query.get("events_since", ""))
        cp = make_checkpoint(host=host, **self.checkpoints.get(host, {}))
        return web.Response(body=encode(cp), content_type="application/json")

    async def garbage(self, request: web.Request) -> web.Response:
        return web.Response(body=b"<html>502 Bad Gateway</html>", content_type="text/html")

    async def invalid(self, request: web.Request) -> web.Response:
        return web.Response(
            body=b'{"version": 1, "host": "gpu-invalid", "seq": "three", "agent_started_at": 1,'
            b' "collected_at": 2}',
            content_type="application/json",
        )

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.slow_s)
        return web.Response(body=b"{}")

    async def huge(self, request: web.Request) -> web.Response:
        return web.Response(body=b"[" + b"1," * 2_000_000 + b"1]", content_type="application/json")

    async def error(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="Internal Server Error")

    def start(self) -> None:
        async def _start() -> None:
            self.runner = web.AppRunner(self.app())
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = self.runner.addresses[0][1]

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(_start(), self.loop).result(timeout=10)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
            self.runner = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def agents() -> Iterator[AgentStandIns]:
    standins = AgentStandIns()
    standins.start()
    yield standins
    standins.close()


def add_host(name: str, url: str, token: str = TOKEN) -> Host:
    return Host.objects.create(name=name, agent_url=url, agent_token=token, model_name="llama")
