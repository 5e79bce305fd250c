"""resume: let vLLM take new requests again after a drain (development endpoint)."""

from __future__ import annotations

from typing import Any

from agent.actions import vllm_http
from agent.actions.base import Action, ActionContext


class Resume(Action):
    name = "resume"
    help = "Resume a vLLM paused by drain (needs VLLM_SERVER_DEV_MODE=1)."

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        return await vllm_http.post_ok(ctx, "/resume")
