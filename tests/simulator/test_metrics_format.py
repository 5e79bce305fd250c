"""The simulated /metrics body against the real vLLM sample: same families, same shapes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from simulator.exposition import CONTENT_TYPE, MetricsPage
from tests.simulator.support import (
    FINISHED_HISTOGRAMS,
    SAMPLE_TEXT,
    make_sim,
    render,
    run_for,
    samples,
    total,
    value,
)


def shapes(text: str) -> dict[str, tuple[str, frozenset[str], tuple[str, ...]]]:
    """Return family name -> (type, label names, bucket bounds) as the parser reports them."""
    found = {}
    for family in text_string_to_metric_families(text):
        labels: set[str] = set()
        bounds: set[str] = set()
        for s in family.samples:
            labels |= set(s.labels) - {"le"}
            if "le" in s.labels:
                bounds.add(s.labels["le"])
        found[family.name] = (family.type, frozenset(labels), tuple(sorted(bounds)))
    return found


def help_and_type_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("# HELP", "# TYPE"))]


def check_invariants(text: str) -> None:
    """Assert the invariants that hold on a real single-API-server vLLM (reference §9)."""
    s = samples(text)
    prompt = value(s, "vllm:prompt_tokens_total")
    generation = value(s, "vllm:generation_tokens_total")
    assert value(s, "vllm:iteration_tokens_total_sum") == prompt + generation
    assert total(s, "vllm:prompt_tokens_by_source_total") == prompt
    itl = value(s, "vllm:inter_token_latency_seconds_count")
    assert itl + value(s, "vllm:time_to_first_token_seconds_count") == generation
    finished = total(s, "vllm:request_success_total")
    for name in FINISHED_HISTOGRAMS:
        if name != "vllm:request_params_max_tokens":
            assert value(s, name + "_count") == finished, name
    waiting = value(s, "vllm:num_requests_waiting")
    by_reason = total(s, "vllm:num_requests_waiting_by_reason")
    assert waiting == by_reason


def busy_page() -> str:
    sim = make_sim("healthy")
    run_for(sim, 240)
    return render(sim)


def test_it_exposes_the_same_families_types_labels_and_buckets_as_vllm() -> None:
    assert shapes(busy_page()) == shapes(SAMPLE_TEXT)


def test_it_uses_vllms_help_texts_and_family_order() -> None:
    assert help_and_type_lines(busy_page()) == help_and_type_lines(SAMPLE_TEXT)


def test_it_keeps_the_samples_invariants() -> None:
    check_invariants(SAMPLE_TEXT)  # the checker itself holds on the real sample
    check_invariants(busy_page())


def test_it_writes_numbers_and_labels_as_prometheus_client_does() -> None:
    text = busy_page()
    assert 'vllm:num_requests_running{engine="0",model_name="meta-llama/' in text
    assert 'le="0.001"' in text and 'le="+Inf"' in text and 'le="20000.0"' in text
    assert "process_max_fds 1.048576e+06" in text
    assert 'vllm:cache_config_info{block_size="16",cache_dtype="auto"' in text


def test_it_describes_the_kv_cache_like_the_sample() -> None:
    s = samples(busy_page())
    info = next(dict(labels) for (name, labels) in s if name == "vllm:cache_config_info")
    assert info["num_gpu_blocks"] == "27852"
    assert info["kv_cache_size_tokens"] == "445632"
    assert info["kv_cache_max_concurrency"] == "13.599609375"
    assert info["gpu_memory_utilization"] == "0.92"


def test_it_renders_once_per_step_however_often_it_is_read() -> None:
    sim = make_sim("healthy")
    page = MetricsPage(sim)
    run_for(sim, 20)
    first = page.body()
    assert all(page.body() is first for _ in range(100))
    run_for(sim, 1)
    assert page.body() != first
    assert page.renders == 2


def test_it_declares_the_prometheus_text_content_type() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_it_drops_the_engine_families_with_disable_log_stats() -> None:
    sim = make_sim("healthy")
    sim.restart(args={"disable_log_stats": True})
    run_for(sim, 30)
    names = {f.name for f in text_string_to_metric_families(render(sim))}
    assert not [n for n in names if n.startswith("vllm:")]
    assert "process_start_time_seconds" in names and "http_requests" in names
