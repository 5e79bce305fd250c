"""Builders for test inputs: checkpoints as the agent would send them, hosts, users."""

from __future__ import annotations

import itertools
import time
from typing import Any

from agent.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    Gpu,
    Health,
    KvCacheInfo,
    LatencySummary,
    Rates,
    Vllm,
)
from agent.lifecycle import LifecycleState

GIB = 1024**3
_seq = itertools.count(1)


def make_checkpoint(
    *,
    host: str = "gpu-01",
    collected_at: float | None = None,
    seq: int | None = None,
    agent_started_at: float = 1_780_000_000.0,
    lifecycle_state: LifecycleState = LifecycleState.SERVING,
    lifecycle_detail: str = "",
    kv_cache_usage_pct: float = 32.0,
    requests_running: float = 96.0,
    requests_waiting: float = 2.0,
    generation_tokens_per_s: float = 2400.0,
    prompt_tokens_per_s: float = 5100.0,
    ttft_p99_s: float = 0.42,
    itl_p99_s: float = 0.031,
    gpu_memory_used_bytes: float = 74 * GIB,
    gpu_memory_total_bytes: float = 80 * GIB,
    gpu_temperature_c: float = 61.0,
    vllm: bool = True,
    **changes: Any,
) -> Checkpoint:
    """Return a valid checkpoint of a healthy, busy host; keyword arguments change one figure."""
    now = time.time() if collected_at is None else collected_at
    return Checkpoint(
        version=CHECKPOINT_VERSION,
        host=host,
        seq=next(_seq) if seq is None else seq,
        agent_started_at=agent_started_at,
        collected_at=now,
        collect_duration_s=0.004,
        lifecycle_state=lifecycle_state,
        lifecycle_detail=lifecycle_detail,
        vllm=_vllm(
            kv_cache_usage_pct,
            requests_running,
            requests_waiting,
            generation_tokens_per_s,
            prompt_tokens_per_s,
            ttft_p99_s,
            itl_p99_s,
        )
        if vllm
        else None,
        gpus=[
            Gpu(
                index=0,
                uuid="GPU-5f1c0e6a",
                name="NVIDIA H100 80GB HBM3",
                memory_used_bytes=gpu_memory_used_bytes,
                memory_total_bytes=gpu_memory_total_bytes,
                utilization_gpu_pct=87.0,
                temperature_c=gpu_temperature_c,
                power_w=540.0,
                power_limit_w=700.0,
            )
        ],
        gpu_backend="simulated",
        **changes,
    )


def _vllm(
    kv: float,
    running: float,
    waiting: float,
    gen: float,
    prompt: float,
    ttft99: float,
    itl99: float,
) -> Vllm:
    return Vllm(
        url="http://127.0.0.1:8000",
        health=Health(ok=True, status_code=200, latency_s=0.002),
        model_name="meta-llama/Llama-3.1-8B-Instruct",
        engines=1,
        requests_running=running,
        requests_waiting=waiting,
        kv_cache_usage_pct=kv,
        sleep_state="awake",
        cache=KvCacheInfo(num_gpu_blocks=27852, block_size=16, kv_cache_size_tokens=445632),
        totals={"generation_tokens": 1.2e7, "prompt_tokens": 2.6e7},
        rates=Rates(generation_tokens_per_s=gen, prompt_tokens_per_s=prompt, preemptions_per_s=0.0),
        latency={
            "ttft": LatencySummary(
                count=40, mean_s=ttft99 / 3, p50_s=ttft99 / 4, p90_s=ttft99 / 2, p99_s=ttft99
            ),
            "itl": LatencySummary(
                count=9000, mean_s=itl99 / 2, p50_s=itl99 / 2, p90_s=itl99 * 0.8, p99_s=itl99
            ),
        },
        forward_progress=True,
        interval_s=5.0,
        samples=520,
    )


# Two hosts' lifecycles (seconds ago, from, to): one degraded twice and failed once, now
# degraded again; one degraded once and recovered. Their graph: from degraded, half the ways
# lead to failed_cuda_oom and half back to serving.
SICK_HOST_STEPS = [(900, "unknown", "serving"), (300, "serving", "degraded"),
                   (200, "degraded", "failed_cuda_oom"), (150, "failed_cuda_oom", "serving"),
                   (60, "serving", "degraded")]  # fmt: skip
RECOVERED_HOST_STEPS = [(900, "unknown", "serving"), (400, "serving", "degraded"),
                        (350, "degraded", "serving")]  # fmt: skip


def add_transitions(host: Any, steps: list[tuple[float, str, str]]) -> None:
    """Store the host's lifecycle transitions, each `ago` seconds before now."""
    from datetime import timedelta

    from django.utils import timezone

    from monitor.models import LifecycleTransition

    now = timezone.now()
    LifecycleTransition.objects.bulk_create(
        LifecycleTransition(host=host, at=now - timedelta(seconds=ago), from_state=a, to_state=b)
        for ago, a, b in steps
    )


def with_gpus(
    checkpoint: dict[str, Any], used: list[float], total: float = 80 * GIB
) -> dict[str, Any]:
    """Return the checkpoint dict with one GPU per entry of `used` (bytes), copies of its first."""
    first = checkpoint["gpus"][0]
    gpus = [{**first, "index": i, "uuid": f"GPU-{i:08x}", "memory_used_bytes": u,
             "memory_total_bytes": total} for i, u in enumerate(used)]  # fmt: skip
    return {**checkpoint, "gpus": gpus}
