"""sleep: put vLLM's engine to sleep, freeing GPU memory (development endpoint).

Level 1 offloads the weights to CPU memory and discards the KV cache; level 2 discards both.
vLLM must run with --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1.
"""

from __future__ import annotations

from typing import Any

from agent.actions import vllm_http
from agent.actions.base import Action, ActionContext, ActionError, Param


class Sleep(Action):
    name = "sleep"
    help = "Put the engine to sleep (needs --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1)."
    params = {"level": Param("int", "1: offload weights; 2: discard them", 1, 2, default=1)}

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        status, body = await vllm_http.post(ctx, "/sleep", [("level", str(params["level"]))])
        if status >= 500 and not _sleep_mode_on(ctx):
            raise ActionError(
                f"vLLM answered /sleep with HTTP {status}: it runs without --enable-sleep-mode"
            )
        if not 200 <= status < 300:
            raise ActionError(f"vLLM answered /sleep with HTTP {status}: {body.strip()[:300]}")
        return {"endpoint": "/sleep", "status": status, "level": params["level"]}


def _sleep_mode_on(ctx: ActionContext) -> bool:
    command = ctx.vllm.command
    return command is None or bool(command.get("enable_sleep_mode"))
