"""How vLLM splits one GPU's memory budget at startup, and how many KV blocks that leaves.

vLLM takes `gpu_memory_utilization x total` per GPU, loads its share of the weights, profiles
the activation peak and (since v0.21) the CUDA-graph pool, and gives the rest to the KV cache
(reference §4, §9). The overhead constants are calibrated so that the defaults reproduce the
reference sample: Llama-3.1-8B on one H100 80GB -> 27,852 blocks x 16 = 445,632 tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.catalog import GIB, GpuSpec, ModelSpec
from simulator.engine_args import KV_DTYPE_BYTES, EngineArgs

NON_TORCH_BYTES = int(0.6 * GIB)  # CUDA context, NCCL and allocator bookkeeping
NCCL_BUFFER_BYTES = int(0.25 * GIB)  # extra per GPU with tensor parallelism
ACTIVATION_BYTES_PER_TOKEN = 160 * 1024  # activation peak per batched token (8B-class)
GRAPH_BYTES_PER_CAPTURE_SIZE = 4_340_000  # CUDA-graph pool per captured batch size
MAX_CAPTURE_SIZE = 512


class StartupMemoryError(Exception):
    """The memory budget cannot hold the model: the message is vLLM's own ValueError text."""


@dataclass(frozen=True, slots=True)
class KvPlan:
    budget_bytes: int  # per GPU
    weights_bytes: int  # per GPU
    activation_bytes: int
    graph_bytes: int
    kv_bytes: int  # per GPU, what the blocks actually use
    num_gpu_blocks: int
    block_size: int

    @property
    def kv_cache_size_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size

    def max_concurrency(self, max_model_len: int) -> float:
        return self.kv_cache_size_tokens / max_model_len


def capture_sizes(args: EngineArgs) -> int:
    """Return the number of CUDA-graph batch sizes vLLM captures (0 with --enforce-eager)."""
    if args.enforce_eager:
        return 0
    largest = min(2 * (args.max_num_seqs or 256), MAX_CAPTURE_SIZE)
    # [1, 2, 4] + range(8, 256, 8) + range(256, largest + 1, 16)
    sizes = [s for s in (1, 2, 4) if s <= largest]
    sizes += [s for s in range(8, 256, 8) if s <= largest]
    sizes += list(range(256, largest + 1, 16))
    return len(sizes)


def plan_kv_cache(args: EngineArgs, model: ModelSpec, gpu: GpuSpec) -> KvPlan:
    """Return the per-GPU memory split for resolved `args`, or raise StartupMemoryError."""
    tp = args.tensor_parallel_size
    budget = int(args.gpu_memory_utilization * gpu.memory_total_bytes)
    weights = model.weight_bytes // tp
    activation = (args.max_num_batched_tokens or 0) * ACTIVATION_BYTES_PER_TOKEN
    graphs = 0 if args.enforce_eager else _graph_bytes(args)
    overhead = NON_TORCH_BYTES + (NCCL_BUFFER_BYTES if tp > 1 else 0) + activation + graphs
    available = budget - weights - overhead
    if available <= 0:
        raise StartupMemoryError(
            "ValueError: No available memory for the cache blocks. Try increasing "
            "`gpu_memory_utilization` when initializing the engine."
        )
    block_bytes = (
        args.block_size * model.kv_bytes_per_token(KV_DTYPE_BYTES[args.kv_cache_dtype]) // tp
    )
    blocks = args.num_gpu_blocks_override or available // block_bytes
    _check_fits_max_len(args, blocks, available, block_bytes)
    return KvPlan(
        budget, weights, activation, graphs, blocks * block_bytes, blocks, args.block_size
    )


def _graph_bytes(args: EngineArgs) -> int:
    largest = min(2 * (args.max_num_seqs or 256), MAX_CAPTURE_SIZE)
    return largest * GRAPH_BYTES_PER_CAPTURE_SIZE


def _check_fits_max_len(args: EngineArgs, blocks: int, available: int, block_bytes: int) -> None:
    max_len = args.max_model_len or 0
    if blocks * args.block_size >= max_len:
        return
    needed_gib = math.ceil(max_len / args.block_size) * block_bytes / GIB
    estimate = blocks * args.block_size
    raise StartupMemoryError(
        f"ValueError: To serve at least one request with the model's max seq len ({max_len}), "
        f"({needed_gib:.2f} GiB KV cache is needed, which is larger than the available KV cache "
        f"memory ({available / GIB:.2f} GiB). Based on the available memory, the estimated "
        f"maximum model length is {estimate}. Try increasing `gpu_memory_utilization` or "
        f"decreasing `max_model_len` when initializing the engine."
    )
