"""The agent's HTTP API, for the control plane.

    GET  /v1/checkpoint[?events_since=N]   a fresh checkpoint, JSON (agent.checkpoint.encode),
                                           with the events whose id is above N (all kept ones
                                           when N is absent)
    GET  /v1/healthz                       {"ok": true, "host": ..., "version": ..., "seq": ...}
    POST /v1/actions                       {"action": NAME, "params": {...},
                                            "idempotency_key": "..."}: 202 and the new job;
                                           200 and the first job when the key was seen before;
                                           400 refused (the error names what and why); 409 the
                                           key was used for another request
    GET  /v1/actions/<id>                  the job: status pending, running, succeeded, failed;
                                           result or error
    GET  /v1/actions                       the newest jobs and every action with its parameters

Every request, including one for an unknown path, needs `Authorization: Bearer <token>`.
Without the right token the answer is 401 with a minimal body: no host name, no data.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from agent import AGENT_VERSION
from agent.actions.base import ActionRefused
from agent.actions.executor import ActionConflict
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
    app.router.add_post("/v1/actions", _submit_action)
    app.router.add_get("/v1/actions", _list_actions)
    app.router.add_get("/v1/actions/{id}", _get_action)
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
    since = request.query.get("events_since")
    if since is not None and not (since.isascii() and since.isdigit()):
        return _json({"error": f"events_since must be an event id (0, 1, ...), got {since!r}"}, 400)
    checkpoint = await request.app[AGENT_KEY].collect(int(since) if since else None)
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


async def _submit_action(request: web.Request) -> web.Response:
    try:
        payload = await request.json()
    except ValueError as exc:
        return _json({"error": f"the body is not JSON: {exc}"}, 400)
    try:
        job, new = request.app[AGENT_KEY].actions.submit(payload)
    except ActionConflict as exc:
        return _json({"error": str(exc)}, 409)
    except ActionRefused as exc:
        return _json({"error": str(exc)}, 400)
    headers = {"Location": f"/v1/actions/{job.id}"}
    return _json(job.to_json(), 202 if new else 200, headers)


async def _get_action(request: web.Request) -> web.Response:
    job = request.app[AGENT_KEY].actions.get(request.match_info["id"])
    if job is None:
        return _json(
            {"error": f"no action {request.match_info['id']!r} (unknown or forgotten)"}, 404
        )
    return _json(job.to_json())


async def _list_actions(request: web.Request) -> web.Response:
    executor = request.app[AGENT_KEY].actions
    return _json(
        {
            "jobs": [job.to_json() for job in executor.recent()],
            "actions": {name: a.describe() for name, a in sorted(executor.registry.items())},
        }
    )


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(payload),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
