"""The models and GPUs a simulated host can run: the numbers that size weights and KV cache.

Figures come from the models' HF configs and NVIDIA's data sheets; the speed factors are
rough and only need to keep the simulated fleet plausible.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    architecture: str
    params_b: float  # billions of parameters
    layers: int
    kv_heads: int
    head_dim: int
    max_position: int  # the derived max_model_len
    shards: int  # safetensors shards, for the loading progress bar

    @property
    def weight_bytes(self) -> int:
        return int(self.params_b * 1e9 * 2)  # bf16

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Return the bytes one token's K and V take over all layers (all TP ranks together)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str
    memory_total_bytes: int
    power_limit_w: float
    idle_power_w: float
    max_sm_clock_mhz: int
    idle_sm_clock_mhz: int
    mem_clock_mhz: int


MODELS = {
    m.name: m
    for m in (
        ModelSpec(
            "meta-llama/Llama-3.1-8B-Instruct", "LlamaForCausalLM", 8.03, 32, 8, 128, 131072, 4
        ),
        ModelSpec(
            "meta-llama/Llama-3.1-70B-Instruct", "LlamaForCausalLM", 70.6, 80, 8, 128, 131072, 30
        ),
        ModelSpec("Qwen/Qwen2.5-7B-Instruct", "Qwen2ForCausalLM", 7.62, 28, 4, 128, 32768, 4),
        ModelSpec("Qwen/Qwen2.5-32B-Instruct", "Qwen2ForCausalLM", 32.8, 64, 8, 128, 32768, 17),
        ModelSpec(
            "mistralai/Mistral-7B-Instruct-v0.3", "MistralForCausalLM", 7.25, 32, 8, 128, 32768, 3
        ),
    )
}

GPUS = {
    g.name: g
    for g in (
        GpuSpec("NVIDIA H100 80GB HBM3", 85_520_809_984, 700.0, 72.0, 1980, 345, 2619),
        GpuSpec("NVIDIA H200", 150_754_820_096, 700.0, 76.0, 1980, 345, 3201),
        GpuSpec("NVIDIA A100-SXM4-80GB", 85_899_345_920, 400.0, 58.0, 1410, 210, 1593),
    )
}

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
DEFAULT_GPU = "NVIDIA H100 80GB HBM3"


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def gpu_spec(name: str) -> GpuSpec:
    if name not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; known: {', '.join(sorted(GPUS))}")
    return GPUS[name]
