"""How long one engine step takes: the batch's decode tokens, prefill chunk and context.

Calibrated so that Llama-3.1-8B on one H100 at the reference sample's load (~96 running,
~100 prefill tokens per step) has an inter-token latency near the sample's 27 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.catalog import GpuSpec, ModelSpec
from simulator.engine_args import EngineArgs

BASE_STEP_S = 0.010  # launch and weight-read cost of one step, 8B model, H100
PER_DECODE_SEQ_S = 0.00012
PER_PREFILL_TOKEN_S = 0.000022  # an 8192-token chunk: ~0.2 s, the sample's slowest steps
PER_CONTEXT_TOKEN_S = 3.5e-8  # attention reads every cached token of the batch
EAGER_FACTOR = 1.2  # no CUDA graphs: slower decode (reference §9: +10-30 %)
TP_EFFICIENCY = 0.85  # speed-up exponent per doubling of GPUs
GPU_SPEED = {"NVIDIA H100 80GB HBM3": 1.0, "NVIDIA H200": 0.85, "NVIDIA A100-SXM4-80GB": 1.6}


@dataclass(frozen=True, slots=True)
class PerfModel:
    scale: float  # model size and GPU speed relative to an 8B model on one H100
    eager: float

    @classmethod
    def build(cls, args: EngineArgs, model: ModelSpec, gpu: GpuSpec) -> PerfModel:
        tp = args.tensor_parallel_size
        scale = model.params_b / 8.0 / tp**TP_EFFICIENCY * GPU_SPEED.get(gpu.name, 1.0)
        return cls(scale=scale, eager=EAGER_FACTOR if args.enforce_eager else 1.0)

    def step_s(self, decode_seqs: int, prefill_tokens: int, context_tokens: int) -> float:
        decode = (BASE_STEP_S + PER_DECODE_SEQ_S * decode_seqs) * self.eager
        work = PER_PREFILL_TOKEN_S * prefill_tokens + PER_CONTEXT_TOKEN_S * context_tokens
        return (decode + work) * self.scale
