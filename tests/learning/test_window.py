from __future__ import annotations

import math

from agent.checkpoint import to_dict
from learning.window import window
from tests.factories import GIB, make_checkpoint


def test_it_reads_aligned_series_from_checkpoint_dicts_oldest_first() -> None:
    newer = to_dict(make_checkpoint(collected_at=110.0, kv_cache_usage_pct=60.0))
    older = to_dict(
        make_checkpoint(collected_at=100.0, kv_cache_usage_pct=50.0, gpu_memory_used_bytes=40 * GIB)
    )
    down = to_dict(make_checkpoint(collected_at=120.0, vllm=False))

    w = window([newer, down, older])

    assert list(w.t) == [100.0, 110.0, 120.0]
    assert list(w["kv_cache_usage_pct"][:2]) == [50.0, 60.0]
    assert math.isnan(w["kv_cache_usage_pct"][2])  # vLLM unreachable: missing, not an error
    assert w["gpu_mem_used_pct"][0] == 50.0
    assert w.last("kv_cache_usage_pct") == 60.0
    assert w.states == ["serving", "serving", "serving"]
    assert len(w.since(110.0)) == 2


def test_it_turns_garbage_into_missing_values() -> None:
    cp = to_dict(make_checkpoint(collected_at=1.0))
    cp["vllm"]["kv_cache_usage_pct"] = "lots"
    cp["gpus"] = [{"temperature_c": float("inf")}]
    w = window([cp])
    assert math.isnan(w["kv_cache_usage_pct"][0]) and math.isnan(w["gpu_temp_c"][0])
