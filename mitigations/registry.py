"""Every mitigation strategy, in one place. To add one, copy its nearest neighbour in
mitigations/library/ and list it here."""

from __future__ import annotations

from mitigations.base import Context, Mitigation, MitigationError, Plan
from mitigations.library.clear_errors import ClearErrors
from mitigations.library.drain_and_restart import DrainAndRestart
from mitigations.library.drain_host import DrainHost
from mitigations.library.emergency_gpu_memory_cleanup import EmergencyGpuMemoryCleanup
from mitigations.library.enable_cpu_offload import EnableCpuOffload
from mitigations.library.enable_kv_cache_fp8 import EnableKvCacheFp8
from mitigations.library.lower_gpu_memory_utilization import LowerGpuMemoryUtilization
from mitigations.library.lower_max_model_len import LowerMaxModelLen
from mitigations.library.lower_max_num_batched_tokens import LowerMaxNumBatchedTokens
from mitigations.library.lower_max_num_seqs import LowerMaxNumSeqs
from mitigations.library.optimize_inference import OptimizeInference
from mitigations.library.pre_startup_configuration import PreStartupConfiguration
from mitigations.library.reduce_batch_size import ReduceBatchSize
from mitigations.library.reset_prefix_cache import ResetPrefixCache
from mitigations.library.restart_failed_workers import RestartFailedWorkers
from mitigations.library.restart_nccl import RestartNccl
from mitigations.library.scale_workers import ScaleWorkers
from mitigations.library.validate_and_fix_config import ValidateAndFixConfig

STRATEGIES: dict[str, Mitigation] = {
    s.name: s
    for s in (
        EmergencyGpuMemoryCleanup(),
        ReduceBatchSize(),
        EnableCpuOffload(),
        OptimizeInference(),
        ScaleWorkers(),
        RestartFailedWorkers(),
        ClearErrors(),
        RestartNccl(),
        ValidateAndFixConfig(),
        PreStartupConfiguration(),
        LowerGpuMemoryUtilization(),
        LowerMaxNumSeqs(),
        LowerMaxNumBatchedTokens(),
        LowerMaxModelLen(),
        EnableKvCacheFp8(),
        ResetPrefixCache(),
        DrainAndRestart(),
        DrainHost(),
    )
}


def candidates(ctx: Context) -> list[Plan]:
    """Return a plan from every strategy that applies to `ctx` and can plan now."""
    plans = []
    for strategy in STRATEGIES.values():
        if not strategy.applies_to(ctx):
            continue
        try:
            plans.append(strategy.plan(ctx))
        except MitigationError:
            continue
    return plans


def why_not(ctx: Context) -> dict[str, str]:
    """Return, for each strategy that applies but cannot plan, why (for the operator)."""
    reasons = {}
    for strategy in STRATEGIES.values():
        if strategy.applies_to(ctx):
            try:
                strategy.plan(ctx)
            except MitigationError as exc:
                reasons[strategy.name] = str(exc)
    return reasons
