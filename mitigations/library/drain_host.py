"""drain_host: take a host out of service (finish its requests, take no new ones) when its GPU
is failing: XID, uncorrectable ECC, remapping failure. A restart cannot fix hardware."""

from __future__ import annotations

from mitigations.base import Context, Mitigation, Plan, Risk, Step, Verification

DRAIN_S = 120.0


class DrainHost(Mitigation):
    name = "drain_host"
    help = "Drain the host and leave it paused for a hardware check (resume undoes it)."
    risk = Risk.HIGH  # the host leaves the pool until someone resumes it
    failure_types = frozenset({"gpu_hardware"})

    def plan(self, ctx: Context) -> Plan:
        return Plan(
            strategy=self.name,
            steps=(Step("drain", {"timeout_s": DRAIN_S}),),
            params={"timeout_s": DRAIN_S},
            reason="the GPU reports a hardware fault; no request should start on it",
            capacity_cost=1.0,
            duration_s=3600.0,  # until an operator resumes it
            verification=Verification(DRAIN_S + 30.0, (), ("gpu_hardware",)),
        )
