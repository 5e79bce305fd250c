"""drain: stop taking new requests and let the running ones finish, within a deadline.

1. With vLLM's development endpoints: POST /pause?mode=wait, then watch /metrics until no
   request runs or the deadline passes. vLLM stays paused: `resume` or a restart undoes it.
2. Without them, in supervise mode: SIGTERM. vLLM drains running requests on SIGTERM only
   when started with --shutdown-timeout N (> 0); otherwise it aborts them. The report says
   which happened.
3. Without them, in attach mode nothing can be done, and the action fails saying so.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.actions import vllm_http
from agent.actions.base import Action, ActionContext, ActionError, Param
from agent.collectors.vllm import VllmCollector
from agent.control import ControlError

POLL_S = 0.5


class Drain(Action):
    name = "drain"
    help = "Stop taking new requests and wait up to timeout_s for the running ones."
    params = {
        "timeout_s": Param("float", "how long running requests may take", 1, 3600, default=60.0),
    }

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        timeout_s = params["timeout_s"]
        started = time.monotonic()
        try:
            await vllm_http.post_ok(ctx, "/pause", [("mode", "wait")], timeout_s=timeout_s)
        except vllm_http.DevModeOff as exc:
            return await _stop_instead(ctx, timeout_s, str(exc))
        left = timeout_s - (time.monotonic() - started)
        running = await _wait_until_idle(ctx.vllm_url, left)
        return {
            "method": "pause",
            "drained": running == 0,
            "requests_running": running,
            "waited_s": round(time.monotonic() - started, 3),
        }


async def _wait_until_idle(url: str, timeout_s: float) -> float | None:
    """Return the running requests when none are left or the time is up (None: unknown)."""
    collector = VllmCollector(url, timeout_s=min(2.0, max(timeout_s, 0.1)))
    deadline = time.monotonic() + timeout_s
    running: float | None = None
    try:
        while True:
            probe = await collector.collect()
            running = probe.vllm.requests_running if probe.vllm else None
            if running == 0 or time.monotonic() >= deadline:
                return running
            await asyncio.sleep(POLL_S)
    finally:
        await collector.close()


async def _stop_instead(ctx: ActionContext, timeout_s: float, why: str) -> dict[str, Any]:
    if ctx.vllm.mode != "supervise":
        raise ActionError(f"{why}; in attach mode the agent cannot stop vLLM either")
    command = ctx.vllm.command
    shutdown_timeout_s = float(command.get("shutdown_timeout", 0) if command else 0)
    try:
        exit = await ctx.vllm.stop(timeout_s)
    except ControlError as exc:
        raise ActionError(str(exc)) from None
    drained = shutdown_timeout_s > 0
    return {
        "method": "sigterm",
        "drained": drained,
        "returncode": exit.returncode if exit else None,
        "note": (
            f"no development endpoints: stopped vLLM with SIGTERM; it drains for up to "
            f"{shutdown_timeout_s:g} s (--shutdown-timeout)"
            if drained
            else "no development endpoints: stopped vLLM with SIGTERM; started without "
            "--shutdown-timeout, it aborted the running requests"
        ),
    }
