"""free_gpu_memory: end the GPU processes that are not the served vLLM (zombies of a past run).

Only a process NVML lists as holding a GPU can be a target, and never:
- a process of the served vLLM tree (the supervised child, its group and descendants; in
  attach mode the process on vLLM's port or --vllm-pid, and its descendants),
- the agent itself or its parent.
In attach mode, when the served vLLM cannot be identified, nothing is signalled at all.

1. List the GPU processes; sort them into targets and spared ones (with the reason).
2. dry_run: report that, signal nothing.
3. SIGTERM each target; wait up to term_timeout_s for them to go.
4. SIGKILL those left, if they are still the same processes (start time) and still listed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from agent.actions.base import Action, ActionContext, ActionError, Param
from agent.processes import Signaller

POLL_S = 0.1
KILL_WAIT_S = 3.0


@dataclass(frozen=True, slots=True)
class GpuHolder:
    gpu: int
    pid: int
    used_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "pid": self.pid, "used_memory_bytes": self.used_bytes}


class FreeGpuMemory(Action):
    name = "free_gpu_memory"
    help = "End GPU processes that are not the served vLLM (SIGTERM, then SIGKILL)."
    params = {
        "dry_run": Param("bool", "only report what would be ended", default=False),
        "term_timeout_s": Param("float", "wait after SIGTERM before SIGKILL", 0.1, 60,
                                default=10.0),
    }  # fmt: skip

    def refusal(self, ctx: ActionContext, params: dict[str, Any]) -> str | None:
        if ctx.nvml is None:
            return f"no GPU backend to list GPU processes with: {ctx.nvml_unavailable or 'none'}"
        if ctx.signaller is None:
            return "this agent's GPU backend lists processes it has no way to signal"
        return None

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        assert ctx.signaller is not None
        holders = await asyncio.to_thread(list_gpu_processes, ctx.nvml)
        served = await ctx.vllm.served_pids()
        if ctx.vllm.mode == "attach" and not served:
            raise ActionError(
                "cannot tell which GPU processes are the attached vLLM (no --vllm-pid, nothing "
                "listens on its port): refusing to signal any"
            )
        targets, spared = _sort(holders, served, {os.getpid(), os.getppid()})
        report: dict[str, Any] = {
            "dry_run": params["dry_run"],
            "targets": [h.to_json() for h in targets],
            "spared": spared,
        }
        if params["dry_run"] or not targets:
            return report
        outcome = await _end(ctx, targets, params["term_timeout_s"])
        report.update(outcome)
        if outcome["still_running"] or outcome["not_permitted"]:
            raise ActionError(f"could not end every target: {outcome}")
        return report


def list_gpu_processes(nvml: Any) -> list[GpuHolder]:
    """Return the compute processes NVML lists on every GPU."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise ActionError(f"nvmlInit failed: {exc}") from None
    try:
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                found.append(GpuHolder(index, int(p.pid), p.usedGpuMemory))
        return found
    except nvml.NVMLError as exc:
        raise ActionError(f"NVML cannot list GPU processes: {exc}") from None
    finally:
        nvml.nvmlShutdown()


def _sort(
    holders: list[GpuHolder], served: set[int], own: set[int]
) -> tuple[list[GpuHolder], list[dict[str, Any]]]:
    targets, spared = [], []
    for h in holders:
        if h.pid in served:
            spared.append({**h.to_json(), "why": "the served vLLM process tree"})
        elif h.pid in own or h.pid <= 1:
            spared.append({**h.to_json(), "why": "the agent itself"})
        else:
            targets.append(h)
    return targets, spared


async def _end(
    ctx: ActionContext, targets: list[GpuHolder], term_timeout_s: float
) -> dict[str, Any]:
    signaller = ctx.signaller
    assert signaller is not None
    pids = sorted({h.pid for h in targets})
    identities = {pid: signaller.identity(pid) for pid in pids}
    not_permitted: list[int] = []
    terminated = _send(signaller, identities, signal.SIGTERM, not_permitted)
    left = await _wait_gone(signaller, identities, term_timeout_s)
    listed = {h.pid for h in await asyncio.to_thread(list_gpu_processes, ctx.nvml)}
    killable = {pid: identities[pid] for pid in left if pid in listed}
    killed = _send(signaller, killable, signal.SIGKILL, not_permitted)
    still = await _wait_gone(signaller, killable, KILL_WAIT_S) if killed else []
    return {"terminated": terminated, "killed": killed, "still_running": still,
            "not_permitted": sorted(set(not_permitted))}  # fmt: skip


def _send(
    signaller: Signaller, identities: dict[int, float | None], signum: int, denied: list[int]
) -> list[int]:
    sent = []
    for pid, identity in identities.items():
        # A pid whose process changed since the listing now names someone else: leave it.
        if identity is None or signaller.identity(pid) != identity:
            continue
        try:
            signaller.signal(pid, signum)
            sent.append(pid)
        except ProcessLookupError:
            continue
        except PermissionError:
            denied.append(pid)
    return sent


async def _wait_gone(
    signaller: Signaller, identities: dict[int, float | None], timeout_s: float
) -> list[int]:
    """Return the pids still running (as the same process) after up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p, i in identities.items() if i is not None and signaller.identity(p) == i]
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(POLL_S)
