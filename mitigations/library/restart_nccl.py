"""restart_nccl (the seed's strategy): bring NCCL's communicators up again by restarting vLLM,
with NCCL's own logging on so a second failure says why, and peer-to-peer transfers off when
the last error blamed them (the troubleshooting knobs vLLM's docs name)."""

from __future__ import annotations

from typing import Any

from mitigations.base import FAILED_STATES, Context, Mitigation, Plan, Risk, restart_plan


class RestartNccl(Mitigation):
    name = "restart_nccl"
    help = "Restart vLLM with NCCL_DEBUG=INFO (and NCCL_P2P_DISABLE=1 after a P2P error)."
    risk = Risk.HIGH  # a collective that hangs holds every in-flight request with it
    failure_types = frozenset({"nccl_error", "hang"})
    states = FAILED_STATES | {"serving", "degraded"}

    def plan(self, ctx: Context) -> Plan:
        env: dict[str, Any] = {"NCCL_DEBUG": "INFO"}
        if _p2p_blamed(ctx):
            env["NCCL_P2P_DISABLE"] = "1"
        return restart_plan(
            ctx,
            self.name,
            env,
            "re-creates the communicators" + (", without P2P" if len(env) > 1 else ""),
            action="restart_with_env",
            drain=False,  # a collective that hangs cannot drain
        )


def _p2p_blamed(ctx: Context) -> bool:
    for error in ctx.checkpoint.get("errors") or ():
        if error.get("category") == "nccl" and "p2p" in str(error.get("message", "")).lower():
            return True
    return False
