from __future__ import annotations

import math

import numpy as np
import pytest

from agent.checkpoint import to_dict
from learning.window import COLUMN_INDEX, EVENTS, Row, Rows, events, from_rows, row, window
from tests.factories import GIB, make_checkpoint, with_gpus


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


def test_a_reading_no_host_can_have_is_missing() -> None:
    # Valid in a checkpoint (a non-negative float), but its square overflows every sum.
    readings = [9e17, 1e18, 1.1e18, 1e200]
    w = window([to_dict(make_checkpoint(collected_at=float(i), requests_waiting=v,
                                        gpu_memory_total_bytes=5e-324))
                for i, v in enumerate(readings)])  # fmt: skip
    assert w["requests_waiting"][:2].tolist() == readings[:2]
    assert np.isnan(w["requests_waiting"][2:]).all()
    assert np.isnan(w["gpu_mem_used_pct"]).all()  # a share of a denormal total overflows


def test_entries_without_an_object_or_a_time_are_left_out_and_wrong_types_read_as_missing() -> None:
    good = to_dict(make_checkpoint(collected_at=5.0, gpu_temperature_c=70.0))
    undated = {**good, "collected_at": "soon"}
    odd = {**good, "collected_at": 9.0, "vllm": "down", "gpus": {"0": {}}, "lifecycle_state": 3}
    w = window([odd, "junk", undated, None, good])  # type: ignore[list-item]
    assert list(w.t) == [5.0, 9.0]
    assert w["gpu_temp_c"][0] == 70.0 and math.isnan(w["gpu_temp_c"][1])
    assert math.isnan(w["kv_cache_usage_pct"][1]) and w["gpu_count"][1] == 0.0
    assert w.states == ["serving", "unknown"]


def test_it_counts_the_events_of_each_checkpoint_and_skips_malformed_ones() -> None:
    cp = to_dict(make_checkpoint(collected_at=1.0))
    cp["errors"] = [
        {"category": "cuda_oom", "message": "torch.OutOfMemoryError", "count": 4},
        {"category": "cuda_oom", "count": "many"},  # no usable count: counts once
        {"category": "nccl_error", "count": 0},
        {"category": "not_a_category", "count": 9},
        "not an object",
    ]
    cp["gpu_events"] = [{"kind": "xid"}, {"kind": "ecc_dbe"}, {"kind": "thermal_throttle"}, 7]
    counts = dict(zip(EVENTS, events(cp), strict=True))
    assert counts["errors_cuda_oom"] == 5.0 and counts["errors_nccl_error"] == 1.0
    assert counts["gpu_fault_events"] == 2.0 and counts["thermal_events"] == 1.0
    assert sum(counts.values()) == 9.0
    # Kept in the window's matrix after the series.
    w = window([cp])
    assert w.cache["matrix"][0, COLUMN_INDEX["errors_cuda_oom"]] == 5.0
    cp["errors"], cp["gpu_events"] = "garbage", None
    assert sum(events(cp)) == 0.0


def test_a_hosts_rows_give_the_same_window_as_reading_them_afresh() -> None:
    # The analysis keeps a host's rows with their figures in one matrix (learning.window.Rows),
    # dropping the oldest, replacing the newest, and moving to a new matrix as it fills up.
    rows = Rows()
    kept: list[Row] = []
    taken = None
    for i in range(300):
        new = row(to_dict(make_checkpoint(collected_at=100.0 + 5 * i, kv_cache_usage_pct=i % 97)))
        if i % 7 == 3:
            rows.pop(), kept.pop()
        rows.append(new), kept.append(new)
        if len(rows) > 90:
            rows.popleft(), kept.pop(0)
        if i == 150:
            taken = rows.window()
            taken_kv = taken["kv_cache_usage_pct"].copy()
    assert taken is not None
    got, fresh = rows.window(), from_rows(kept)
    assert np.array_equal(got.t, fresh.t)
    assert np.array_equal(got.cache["matrix"], fresh.cache["matrix"], equal_nan=True)
    assert got.states == fresh.states and list(got.checkpoints) == list(fresh.checkpoints)
    # A window taken earlier keeps its figures while more rows arrive.
    assert np.array_equal(taken["kv_cache_usage_pct"], taken_kv)


def test_gpu_memory_share_is_the_fullest_gpus_and_the_bytes_are_both() -> None:
    # Eight GPUs: one full, seven half full. Together 56 % is used; the one full GPU OOMs.
    used = [79.6 * GIB] + [40 * GIB] * 7
    cp = with_gpus(to_dict(make_checkpoint(collected_at=1.0)), used)
    w = window([cp])
    assert w["gpu_mem_used_pct"][0] == pytest.approx(99.5)
    assert w["gpu_mem_fullest_used_bytes"][0] == 79.6 * GIB
    assert w["gpu_mem_fullest_total_bytes"][0] == 80 * GIB
    assert w["gpu_mem_used_bytes"][0] == sum(used) and w["gpu_count"][0] == 8.0
