"""validate_and_fix_config (the seed's strategy): apply the fix the agent's pre-startup
validator offered for a failed check (agent/validator.py); without a report, run it."""

from __future__ import annotations

from typing import Any

from mitigations.base import Context, Mitigation, Plan, Risk, Step, restart_plan, verification_for

APPLICABLE = frozenset({"restart_with_args", "restart_with_env", "free_gpu_memory"})


class ValidateAndFixConfig(Mitigation):
    name = "validate_and_fix_config"
    help = "Apply the validator's fix for a failed check, or run the validator first."
    risk = Risk.MEDIUM
    failure_types = frozenset({"engine_dead", "cuda_oom", "system_resource", "nccl_error"})
    states = frozenset(
        {"failed_config", "failed_engine_dead", "failed_cuda_oom", "stopped",
         "failed_system_resource", "failed_nccl", "serving", "degraded"}
    )  # fmt: skip

    def plan(self, ctx: Context) -> Plan:
        fix = _first_fix(ctx.checkpoint)
        if fix is None:
            return Plan(
                strategy=self.name,
                steps=(Step("run_validator"),),
                params={},
                reason="no validation report with a fix yet: run the checks",
                capacity_cost=0.0,
                duration_s=10.0,
                verification=verification_for(ctx),
            )
        name, action, params = fix
        if action.startswith("restart"):
            return restart_plan(
                ctx, self.name, params, f"the validator's fix for {name}", action=action,
                drain=ctx.state in ("serving", "degraded"),
            )  # fmt: skip
        return Plan(self.name, (Step(action, params),), params, f"the validator's fix for {name}",
                    0.0, 10.0, verification_for(ctx))  # fmt: skip


def _first_fix(cp: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """Return (check, action, params) of the newest report's first failed check with a fix."""
    for report in reversed(cp.get("validations") or []):
        for check in report.get("checks") or ():
            action = check.get("fix_action")
            if check.get("status") == "fail" and action in APPLICABLE:
                return str(check.get("name")), str(action), dict(check.get("fix_params") or {})
    return None
