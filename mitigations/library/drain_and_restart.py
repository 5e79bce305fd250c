"""drain_and_restart: let running requests finish, then restart vLLM as it was. Clears a leak,
a fragmented allocator or a slow engine without dropping a request."""

from __future__ import annotations

from mitigations.base import Context, Mitigation, Plan, Risk, restart_plan


class DrainAndRestart(Mitigation):
    name = "drain_and_restart"
    help = "Drain running requests (60 s at most), then restart vLLM with the same arguments."
    risk = Risk.MEDIUM
    failure_types = frozenset(
        {"cuda_oom", "thermal_throttling", "hang", "nccl_error", "gpu_hardware",
         "system_resource", "performance_degradation"}
    )  # fmt: skip

    def plan(self, ctx: Context) -> Plan:
        return restart_plan(
            ctx, self.name, {}, "a fresh process, after its requests finish", action="restart"
        )
