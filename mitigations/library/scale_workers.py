"""scale_workers (the seed's strategy): add serving capacity for the model by waking a spare
replica (a vLLM of the same model that sleeps) on another host. When no such replica exists it
says so instead of pretending: Sentinel does not provision machines."""

from __future__ import annotations

from mitigations.base import (
    Context,
    Mitigation,
    MitigationError,
    Plan,
    Recovery,
    Risk,
    Step,
    Verification,
)


class ScaleWorkers(Mitigation):
    name = "scale_workers"
    help = "Wake a sleeping replica of the same model on another host."
    risk = Risk.LOW  # it adds capacity and touches no request
    failure_types = frozenset(
        {"kv_cache_exhausted", "performance_degradation", "thermal_throttling"}
    )

    def plan(self, ctx: Context) -> Plan:
        host = ctx.checkpoint.get("host")
        spare = [
            s
            for s in ctx.spare_hosts
            if s.get("host") != host and s.get("model") == ctx.model
            and s.get("state") == "sleeping"
        ]  # fmt: skip
        if not spare:
            raise MitigationError(
                f"no spare capacity: no sleeping replica of {ctx.model or 'this model'} "
                "on another host; add one, or lower the load"
            )
        target = str(spare[0]["host"])
        return Plan(
            strategy=self.name,
            steps=(Step("wake_up", {}, host=target),),
            params={"replica": target},
            reason=f"{target} serves {ctx.model} too and sleeps",
            capacity_cost=0.0,
            duration_s=30.0,
            verification=Verification(
                300.0, (Recovery("requests_waiting", "<", 50.0),), (ctx.failure_type,)
            ),
        )
