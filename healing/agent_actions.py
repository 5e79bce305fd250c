"""Ask an agent to run an action and wait for its end. No ORM here.

Every request carries an idempotency key: the agent runs a key once and answers a repeat with
the first job, so a step resent after a lost answer or a redelivered task never runs twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

POLL_S = 0.25


class AgentActionError(Exception):
    """The agent refused the action, failed it, or could not be reached in time."""


async def run_action(
    url: str,
    token: str,
    action: str,
    params: dict[str, Any],
    key: str,
    *,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Submit `action` with `key` and return the finished job (JSON) when it succeeded."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"action": action, "params": params, "idempotency_key": key}
    deadline = time.monotonic() + timeout_s
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        job = await _submit(session, url, body)
        while job.get("status") not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                raise AgentActionError(f"{action} did not finish in {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)
            job = await _get(session, f"{url.rstrip('/')}/v1/actions/{job['id']}")
    if job["status"] == "failed":
        raise AgentActionError(f"{action} failed on the agent: {job.get('error') or 'no reason'}")
    return job


async def _submit(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        async with session.post(f"{url.rstrip('/')}/v1/actions", json=body) as response:
            data = await response.json(content_type=None)
            if response.status not in (200, 202):
                raise AgentActionError(f"the agent answered {response.status}: {data.get('error')}")
            return dict(data)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise AgentActionError(f"cannot reach the agent at {url}: {exc}") from None


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    try:
        async with session.get(url) as response:
            data = await response.json(content_type=None)
            if response.status != 200:
                raise AgentActionError(f"the agent answered {response.status}: {data.get('error')}")
            return dict(data)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise AgentActionError(f"lost the agent at {url}: {exc}") from None
