"""restart: stop vLLM and start it again with the same arguments.

Supervise mode: SIGTERM to the process group, SIGKILL after the stop timeout, start again.
Attach mode: the configured restart_command (e.g. `systemctl restart vllm`).
"""

from __future__ import annotations

from typing import Any

from agent.actions.base import Action, ActionContext, ActionError
from agent.control import ControlError


class Restart(Action):
    name = "restart"
    help = "Restart vLLM with the same arguments (it loads the model again)."

    def refusal(self, ctx: ActionContext, params: dict[str, Any]) -> str | None:
        return ctx.vllm.restart_refusal(args=False, env=False)

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return await ctx.vllm.restart()
        except ControlError as exc:
            raise ActionError(str(exc)) from None
