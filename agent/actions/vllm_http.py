"""Call vLLM's development endpoints (/sleep, /pause, /reset_prefix_cache, ...) for actions.

vLLM serves them only with VLLM_SERVER_DEV_MODE=1; without it they answer 404, which is
turned into an error that says so rather than "not found".
"""

from __future__ import annotations

from typing import Any

import aiohttp

from agent.actions.base import ActionContext, ActionError

DEV_MODE_OFF = (
    "vLLM does not serve {path}: its development endpoints are off "
    "(start vLLM with VLLM_SERVER_DEV_MODE=1)"
)


class DevModeOff(ActionError):
    """vLLM answered 404 for a development endpoint."""


async def post(
    ctx: ActionContext,
    path: str,
    query: list[tuple[str, str]] | None = None,
    *,
    timeout_s: float | None = None,
) -> tuple[int, str]:
    """POST to vLLM's `path`; return the status and body, ActionError when unreachable or 404."""
    url = ctx.vllm_url.rstrip("/") + path
    timeout_s = timeout_s or ctx.http_timeout_s
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, params=query or []) as resp,
        ):
            status, body = resp.status, await resp.text()
    except aiohttp.ClientConnectionError as exc:
        raise ActionError(f"vLLM is not reachable at {ctx.vllm_url}: {exc}") from None
    except TimeoutError:
        raise ActionError(f"vLLM did not answer {path} within {timeout_s:g} s") from None
    if status == 404:
        raise DevModeOff(DEV_MODE_OFF.format(path=path))
    return status, body


async def post_ok(
    ctx: ActionContext,
    path: str,
    query: list[tuple[str, str]] | None = None,
    *,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """POST and require a 2xx answer; return what the action reports."""
    status, body = await post(ctx, path, query, timeout_s=timeout_s)
    if not 200 <= status < 300:
        raise ActionError(f"vLLM answered {path} with HTTP {status}: {body.strip()[:300]}")
    return {"endpoint": path, "status": status, "answer": body.strip()[:300]}
