"""run_validator: run the pre-startup validator now and keep its report as an event.

The validator (agent/validator.py) is imported when the action runs, so the agent works
without it; if it is missing, the action fails saying so.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

import msgspec

from agent.actions.base import Action, ActionContext, ActionError
from agent.checkpoint import ValidationReport

VALIDATOR_MODULE = "agent.validator"


class RunValidator(Action):
    name = "run_validator"
    help = "Run the pre-startup checks against the current command line and GPUs."

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        run_validation = _validator()
        # The served vLLM's GPU memory counts as free: a restart releases it.
        kwargs = {"vllm_url": ctx.vllm_url, "nvml": ctx.nvml, "environ": ctx.vllm.environ(),
                  "trigger": "on_demand", "own_pids": await ctx.vllm.served_pids()}  # fmt: skip
        if inspect.iscoroutinefunction(run_validation):
            report = await run_validation(ctx.vllm.command, **kwargs)
        else:
            # The checks call NVML and may take a while: off the event loop.
            report = await asyncio.to_thread(run_validation, ctx.vllm.command, **kwargs)
        if not isinstance(report, ValidationReport):
            raise ActionError(f"the validator returned {type(report).__name__}, not a report")
        stored = ctx.events.add(report)
        return {"status": stored.status, "report": msgspec.to_builtins(stored)}


def _validator() -> Any:
    try:
        module = importlib.import_module(VALIDATOR_MODULE)
        return module.run_validation
    except (ImportError, AttributeError) as exc:
        raise ActionError(
            f"the pre-startup validator is not available in this agent ({exc})"
        ) from None
