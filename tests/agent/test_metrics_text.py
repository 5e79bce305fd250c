"""Reading Prometheus text: what is kept, how odd but legal lines parse, V0 fallbacks."""

from __future__ import annotations

import pytest

from agent.collectors.exposition import ExpositionParser
from agent.collectors.vllm_delta import compare
from agent.collectors.vllm_metrics import read_metrics, wanted_sample_names


def test_it_keeps_only_the_wanted_samples_but_counts_every_line() -> None:
    parser = ExpositionParser({"vllm:num_requests_running"})
    exp = parser.parse(
        "# HELP python_gc_objects_collected_total Objects collected during gc\n"
        'python_gc_objects_collected_total{generation="0"} 12.0\n'
        '\nvllm:num_requests_running{engine="0"} 3.0\n'
        'vllm:num_requests_running_created{engine="0"} 1.7e+09\n'
    )
    assert exp.samples == {"vllm:num_requests_running": [({"engine": "0"}, 3.0)]}
    assert exp.sample_lines == 3


def test_it_reads_label_values_with_braces_spaces_and_escapes() -> None:
    parser = ExpositionParser({"http_requests_total"})
    exp = parser.parse(
        'http_requests_total{handler="/v1/{id} x",method="GET",q="a\\"b",status="2xx"}'
        " 7 1781503200000\n"
    )
    ((labels, value),) = exp.get("http_requests_total")
    assert labels == {"handler": "/v1/{id} x", "method": "GET", "q": 'a"b', "status": "2xx"}
    assert value == 7.0


def test_it_parses_values_again_on_every_scrape_of_a_known_series() -> None:
    parser = ExpositionParser({"vllm:num_requests_waiting"})
    parser.parse('vllm:num_requests_waiting{engine="0"} 1.0\n')
    exp = parser.parse('vllm:num_requests_waiting{engine="0"} 2.5e+01\n')
    assert exp.get("vllm:num_requests_waiting") == [({"engine": "0"}, 25.0)]


def test_it_rejects_a_wanted_line_without_a_value() -> None:
    parser = ExpositionParser({"vllm:num_requests_waiting"})
    with pytest.raises(ValueError):
        parser.parse('vllm:num_requests_waiting{engine="0"}\n')


def test_it_uses_v0_throughput_gauges_only_when_token_counters_are_absent() -> None:
    parser = ExpositionParser(wanted_sample_names())
    v0 = read_metrics(
        parser.parse(
            'vllm:num_requests_running{model_name="m"} 4.0\n'
            'vllm:avg_prompt_throughput_toks_per_s{model_name="m"} 812.5\n'
            'vllm:avg_generation_throughput_toks_per_s{model_name="m"} 301.0\n'
        )
    )
    first = compare(None, v0, 0.0)
    assert first.rates.prompt_tokens_per_s == 812.5
    assert first.rates.generation_tokens_per_s == 301.0

    with_counters = read_metrics(
        parser.parse(
            'vllm:avg_generation_throughput_toks_per_s{model_name="m"} 301.0\n'
            'vllm:generation_tokens_total{model_name="m"} 1000.0\n'
        )
    )
    assert compare(None, with_counters, 0.0).rates.generation_tokens_per_s is None


def test_it_ignores_nan_and_negative_gauges_that_would_make_the_checkpoint_invalid() -> None:
    parser = ExpositionParser(wanted_sample_names())
    reading = read_metrics(
        parser.parse(
            'vllm:num_requests_running{engine="0"} NaN\n'
            'vllm:num_requests_waiting{engine="0"} -1.0\n'
            'vllm:kv_cache_usage_perc{engine="0"} 1.2\n'
        )
    )
    assert (reading.requests_running, reading.requests_waiting) == (None, None)
    assert reading.kv_cache_usage_pct == 100.0


def test_it_tolerates_blank_padding_and_whitespace_only_lines() -> None:
    parser = ExpositionParser({"vllm:num_requests_running", "process_open_fds"})
    exp = parser.parse('   \n  vllm:num_requests_running{engine="0"} 3.0  \n\tprocess_open_fds 9\n')
    assert exp.get("vllm:num_requests_running") == [({"engine": "0"}, 3.0)]
    assert exp.get("process_open_fds") == [({}, 9.0)]
