"""reset_prefix_cache: drop vLLM's cached prefix blocks (development endpoint)."""

from __future__ import annotations

from typing import Any

from agent.actions import vllm_http
from agent.actions.base import Action, ActionContext, Param


class ResetPrefixCache(Action):
    name = "reset_prefix_cache"
    help = "Empty vLLM's prefix cache (needs VLLM_SERVER_DEV_MODE=1)."
    params = {
        "reset_running_requests": Param("bool", "also reset the blocks of running requests",
                                        default=False),
    }  # fmt: skip

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        running = "true" if params["reset_running_requests"] else "false"
        return await vllm_http.post_ok(
            ctx, "/reset_prefix_cache", [("reset_running_requests", running)]
        )
