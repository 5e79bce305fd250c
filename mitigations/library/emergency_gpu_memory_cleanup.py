"""emergency_gpu_memory_cleanup (the seed's strategy): end the GPU processes that are not the
served vLLM (zombies of an earlier run, a stray notebook). The agent never ends vLLM's own tree
or itself, and re-checks each process before killing it (agent/actions/free_gpu_memory.py)."""

from __future__ import annotations

from typing import Any

from mitigations.base import (
    Context,
    Mitigation,
    MitigationError,
    Plan,
    Risk,
    Step,
    verification_for,
)

GIB = 1024.0**3


class EmergencyGpuMemoryCleanup(Mitigation):
    name = "emergency_gpu_memory_cleanup"
    help = "End GPU processes other than the served vLLM that hold GPU memory."
    risk = Risk.MEDIUM  # it ends somebody's process, though never a served request
    failure_types = frozenset({"cuda_oom", "gpu_hardware"})
    states = frozenset({"serving", "degraded", "failed_cuda_oom", "failed_config", "stopped"})

    def plan(self, ctx: Context) -> Plan:
        foreign = _foreign_bytes(ctx.checkpoint)
        if not foreign:
            raise MitigationError("no GPU process other than vLLM holds memory")
        return Plan(
            strategy=self.name,
            steps=(Step("free_gpu_memory", {"dry_run": False}),),
            params={"foreign_gib": round(foreign / GIB, 2)},
            reason=f"{foreign / GIB:.1f} GiB held by processes that are not vLLM",
            capacity_cost=0.0,
            duration_s=10.0,
            verification=verification_for(ctx),
        )


def _foreign_bytes(cp: dict[str, Any]) -> float:
    """Return the GPU memory held by processes outside the vLLM tree the agent reports."""
    served = {(cp.get("process") or {}).get("pid")}
    total = 0.0
    for gpu in cp.get("gpus") or ():
        for proc in gpu.get("processes") or ():
            if proc.get("pid") not in served and not _is_vllm(proc):
                total += float(proc.get("used_memory_bytes") or 0)
    return total


def _is_vllm(proc: dict[str, Any]) -> bool:
    name = str(proc.get("name") or "")
    return "vllm" in name.lower() or name.startswith("VLLM::")
