"""The agent's HTTP API, for the control plane.

    GET /v1/checkpoint   a fresh checkpoint, JSON (agent.checkpoint.encode)
    GET /v1/healthz      {"ok": true, "host": ..., "version": ..., "seq": ...}

Every request, including one for an unknown path, needs `Authorization: Bearer <token>`.
Without the right token the answer is 401 with a minimal body: no host name, no data.
"""

from __future__ import annotations

import hmac
import json

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from agent import AGENT_VERSION
from agent.agent import Agent
from agent.checkpoint import encode

AGENT_KEY = web.AppKey("agent", Agent)
UNAUTHORIZED_BODY = b'{"error":"unauthorized"}'


def make_app(agent: Agent) -> web.Application:
    """Return the aiohttp application serving `agent`, guarded by its configured token."""
    app = web.Application(middlewares=[_bearer_auth(agent.config.token)])
    app[AGENT_KEY] = agent
    app.router.add_get("/v1/checkpoint", _checkpoint)
    app.router.add_get("/v1/healthz", _healthz)
    return app


async def start_server(agent: Agent, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving `agent` on host:port (0 picks a free port); return the runner and port."""
    runner = web.AppRunner(make_app(agent), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return runner, bound_port


def _bearer_auth(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        # Constant-time comparison: response timing must not reveal how much matched.
        if not hmac.compare_digest(given, expected):
            return web.Response(
                status=401,
                body=UNAUTHORIZED_BODY,
                content_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return bearer_auth


async def _checkpoint(request: web.Request) -> web.Response:
    checkpoint = await request.app[AGENT_KEY].collect()
    return web.Response(
        body=encode(checkpoint),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _healthz(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    payload = {
        "ok": True,
        "host": agent.config.host_name,
        "version": AGENT_VERSION,
        "seq": agent.seq,
    }
    return web.Response(
        text=json.dumps(payload),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
