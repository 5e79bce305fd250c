"""Engine arguments of a simulated vLLM server, with vLLM's names and June-2026 defaults.

Only the arguments that change something observable are modelled (reference §4). A restart
with other arguments (`SimulatedVllm.restart(args=...)`) is how mitigations take effect.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from simulator.catalog import DEFAULT_MODEL, GpuSpec, gpu_spec, model_spec

# Bytes per KV element by --kv-cache-dtype; fp8 variants halve the cache.
KV_DTYPE_BYTES = {
    "auto": 2,
    "bfloat16": 2,
    "float16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}

BIG_GPU_BYTES = 70 * 1024**3  # vLLM picks larger scheduler defaults on GPUs with >= 70 GiB


@dataclass(slots=True)
class EngineArgs:
    model: str = DEFAULT_MODEL
    served_model_name: str | None = None
    tensor_parallel_size: int = 1
    max_model_len: int | None = None  # None: the model's derived length
    max_num_seqs: int | None = None  # None: 1024 on big GPUs (not A100), else 256
    max_num_batched_tokens: int | None = None  # None: 8192 on big GPUs, else 2048
    gpu_memory_utilization: float = 0.92
    kv_cache_dtype: str = "auto"
    block_size: int = 16
    enforce_eager: bool = False
    enable_prefix_caching: bool = True
    enable_sleep_mode: bool = False
    enable_server_load_tracking: bool = False
    disable_log_stats: bool = False
    num_gpu_blocks_override: int | None = None
    watermark: float = 0.0
    scheduler_reserve_full_isl: bool = True
    host: str = "0.0.0.0"
    port: int = 8000
    extra: dict[str, Any] = field(default_factory=dict)  # accepted, shown, not modelled

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    def resolved(self, gpu: GpuSpec) -> EngineArgs:
        """Return a copy with the model- and GPU-dependent defaults filled in, validated."""
        big = gpu.memory_total_bytes >= BIG_GPU_BYTES and "A100" not in gpu.name
        args = dataclasses.replace(
            self,
            max_model_len=self.max_model_len or model_spec(self.model).max_position,
            max_num_seqs=self.max_num_seqs or (1024 if big else 256),
            max_num_batched_tokens=self.max_num_batched_tokens or (8192 if big else 2048),
        )
        args.validate()
        return args

    def validate(self) -> None:
        if self.kv_cache_dtype not in KV_DTYPE_BYTES:
            raise ValueError(f"kv_cache_dtype={self.kv_cache_dtype!r} is not supported")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.block_size not in (8, 16, 32, 64, 128):
            raise ValueError(f"block_size={self.block_size} is not supported")
        if not 0 <= self.watermark < 1:
            raise ValueError("watermark must be in [0, 1)")

    def non_default(self) -> dict[str, Any]:
        """Return the arguments that differ from vLLM's defaults, as the startup log shows.

        Call it on the arguments as given, before `resolved()` fills in derived values.
        """
        defaults = EngineArgs()
        shown: dict[str, Any] = {"model": self.model}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("model", "extra") and value != getattr(defaults, f.name):
                shown[f.name] = value
        shown.update(self.extra)
        return shown

    def with_changes(self, changes: dict[str, Any]) -> EngineArgs:
        """Return a copy with `changes` applied; keys may use dashes (`max-num-seqs`)."""
        known = {f.name for f in dataclasses.fields(self)} - {"extra"}
        updates: dict[str, Any] = {}
        extra = dict(self.extra)
        for key, value in changes.items():
            name = key.lstrip("-").replace("-", "_")
            if name in known:
                updates[name] = value
            else:
                extra[name] = value
        return dataclasses.replace(self, extra=extra, **updates)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve(args: EngineArgs, gpu_name: str) -> EngineArgs:
    """Return `args` resolved and validated for a host with `gpu_name` GPUs."""
    return args.resolved(gpu_spec(gpu_name))
