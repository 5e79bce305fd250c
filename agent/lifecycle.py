"""Lifecycle states of a vLLM server, as Sentinel names them.

The values are stored in checkpoints and in the database, so they never change meaning;
new states are only added. Failed states carry their cause in the name, so the state graph
can tell an OOM death from an NCCL hang.
"""

from __future__ import annotations

from enum import StrEnum


class LifecycleState(StrEnum):
    UNKNOWN = "unknown"
    PRE_STARTUP = "pre_startup"
    INITIALIZING = "initializing"
    LOADING_WEIGHTS = "loading_weights"
    PROFILING_MEMORY = "profiling_memory"
    ALLOCATING_KV_CACHE = "allocating_kv_cache"
    CAPTURING_CUDA_GRAPHS = "capturing_cuda_graphs"
    STARTING_API_SERVER = "starting_api_server"
    SERVING = "serving"
    DEGRADED = "degraded"
    SLEEPING = "sleeping"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED_CUDA_OOM = "failed_cuda_oom"
    FAILED_KV_CACHE_EXHAUSTED = "failed_kv_cache_exhausted"
    FAILED_NCCL = "failed_nccl"
    FAILED_ENGINE_DEAD = "failed_engine_dead"
    FAILED_HANG = "failed_hang"
    FAILED_MODEL_LOAD = "failed_model_load"
    FAILED_CONFIG = "failed_config"
    FAILED_GPU_HARDWARE = "failed_gpu_hardware"
    FAILED_SYSTEM_RESOURCE = "failed_system_resource"
    FAILED_NETWORK = "failed_network"
    FAILED_OTHER = "failed_other"

    @property
    def is_failed(self) -> bool:
        return self.value.startswith("failed_")

    @property
    def is_starting(self) -> bool:
        return self in STARTING_STATES


STARTING_STATES = frozenset(
    {
        LifecycleState.PRE_STARTUP,
        LifecycleState.INITIALIZING,
        LifecycleState.LOADING_WEIGHTS,
        LifecycleState.PROFILING_MEMORY,
        LifecycleState.ALLOCATING_KV_CACHE,
        LifecycleState.CAPTURING_CUDA_GRAPHS,
        LifecycleState.STARTING_API_SERVER,
    }
)


# The failed state an error of each category leads to, when it ends the server. Request-level
# errors (tokenizer_or_request_error) never do: vLLM answers 400 and keeps serving.
FAILED_STATE_BY_CATEGORY = {
    "cuda_oom": LifecycleState.FAILED_CUDA_OOM,
    "kv_cache_exhausted": LifecycleState.FAILED_KV_CACHE_EXHAUSTED,
    "nccl_error": LifecycleState.FAILED_NCCL,
    "engine_dead": LifecycleState.FAILED_ENGINE_DEAD,
    "worker_timeout_or_hang": LifecycleState.FAILED_HANG,
    "model_load_error": LifecycleState.FAILED_MODEL_LOAD,
    "config_error": LifecycleState.FAILED_CONFIG,
    "cuda_illegal_access_or_xid": LifecycleState.FAILED_GPU_HARDWARE,
    "system_resource": LifecycleState.FAILED_SYSTEM_RESOURCE,
    "network_or_port": LifecycleState.FAILED_NETWORK,
    "other": LifecycleState.FAILED_OTHER,
}
