"""wake_up: wake vLLM's sleeping engine, all of it or only some parts (development endpoint)."""

from __future__ import annotations

from typing import Any

from agent.actions import vllm_http
from agent.actions.base import Action, ActionContext, Param


class WakeUp(Action):
    name = "wake_up"
    help = "Wake the engine up (needs VLLM_SERVER_DEV_MODE=1); no tags: everything."
    params = {
        "tags": Param("str_list", "parts to restore", choices=("weights", "kv_cache")),
    }

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        query = [("tags", tag) for tag in params.get("tags") or []]
        return await vllm_http.post_ok(ctx, "/wake_up", query)
