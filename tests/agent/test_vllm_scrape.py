"""The vLLM collector against a stand-in vLLM serving recorded /metrics over real HTTP."""

from __future__ import annotations

import contextlib
import socket
import time
from types import SimpleNamespace

import pytest

from agent.checkpoint import decode, encode, from_dict, to_dict
from agent.lifecycle import LifecycleState
from tests.agent.conftest import DATA, MODEL, SAMPLE, bump, series

BUCKET = "vllm:time_to_first_token_seconds_bucket"
QWEN = "Qwen/Qwen2.5-7B-Instruct"


def _roundtrip(cp):  # type: ignore[no-untyped-def]
    assert decode(encode(cp)) == cp
    assert from_dict(to_dict(cp)) == cp
    return cp


async def test_it_reads_the_real_sample_exactly(fake_vllm, make_agent) -> None:
    cp = _roundtrip(await make_agent(fake_vllm.url).collect())

    v = cp.vllm
    assert v is not None and cp.missing == {}
    assert (v.health.ok, v.health.status_code) == (True, 200)
    assert v.model_name == MODEL and v.engines == 1
    assert (v.requests_running, v.requests_waiting) == (96, 2)
    assert (v.requests_waiting_capacity, v.requests_waiting_deferred) == (2, 0)
    assert v.kv_cache_usage_pct == pytest.approx(31.9223)
    assert v.sleep_state == "awake"
    assert (v.cache.num_gpu_blocks, v.cache.block_size) == (27852, 16)
    assert v.cache.kv_cache_size_tokens == 445632
    assert v.cache.max_concurrency == 13.599609375
    assert (v.cache.gpu_memory_utilization, v.cache.cache_dtype) == (0.92, "auto")
    assert v.totals == {
        "prompt_tokens": 48487965,
        "generation_tokens": 11020532,
        "preemptions": 37,
        "prefix_cache_queries": 48549213,
        "prefix_cache_hits": 19893040,
        "engine_steps": 214377,
        "finished_output_tokens": 1.1000514e07,
        "finished_output_requests": 30412,
        "requests_finished": 30412,
        "requests_stop": 28379,
        "requests_length": 1823,
        "requests_abort": 208,
        "requests_error": 2,
        "requests_repetition": 0,
        "http_requests_2xx": 26169 + 4242 + 1506,
        "http_requests_4xx": 71 + 9,
        "http_requests_5xx": 1,
    }
    assert v.api_server is not None
    assert v.api_server.rss_bytes == 1983418368 and v.api_server.cpu_s == 4127.31
    assert (v.api_server.open_fds, v.api_server.max_fds) == (187, 1048576)
    assert v.api_server.start_time == 1781503200
    assert v.samples == SAMPLE.count("\n") - sum(1 for ln in SAMPLE.splitlines() if ln[:1] == "#")
    # One scrape cannot say anything about an interval.
    assert (v.interval_s, v.forward_progress, v.restarted, v.latency) == (None, None, False, {})
    assert cp.lifecycle_state == LifecycleState.SERVING
    assert cp.lifecycle_detail == "96 running, 2 waiting, KV cache 32 %"


def _advanced(text: str) -> str:
    """The sample 100 TTFT and 10 very slow e2e observations later, with counters advanced."""
    ttft_gained = {"0.04": 10, "0.06": 40, "0.08": 70, "0.1": 90}
    ttft_gained |= {le: 100 for le in ("0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5")}
    ttft_gained |= {le: 100 for le in ("10.0", "20.0", "40.0", "80.0", "160.0", "640.0")}
    ttft_gained |= {"2560.0": 100, "+Inf": 100}
    increments = {
        series("vllm:generation_tokens_total"): 5000,
        series("vllm:prompt_tokens_total"): 20000,
        series("vllm:num_preemptions_total"): 4,
        series("vllm:prefix_cache_queries_total"): 1000,
        series("vllm:prefix_cache_hits_total"): 300,
        series("vllm:iteration_tokens_total_count"): 250,
        series("vllm:request_success_total", finished_reason="stop"): 90,
        series("vllm:request_success_total", finished_reason="abort"): 6,
        series("vllm:request_success_total", finished_reason="error"): 4,
        'http_requests_total{handler="/v1/completions",method="POST",status="4xx"}': 3,
        'http_requests_total{handler="/v1/chat/completions",method="POST",status="5xx"}': 2,
        series("vllm:time_to_first_token_seconds_count"): 100,
        series("vllm:time_to_first_token_seconds_sum"): 7.0,
        series("vllm:e2e_request_latency_seconds_bucket", le="+Inf"): 10,
        series("vllm:e2e_request_latency_seconds_count"): 10,
        series("vllm:e2e_request_latency_seconds_sum"): 100000.0,
    }
    increments |= {series(BUCKET, le=le): n for le, n in ttft_gained.items()}
    return bump(text, increments)


async def test_it_derives_rates_and_percentiles_between_two_scrapes(fake_vllm, make_agent) -> None:
    agent = make_agent(fake_vllm.url)
    await agent.collect()
    fake_vllm.metrics_text = _advanced(SAMPLE)
    cp = _roundtrip(await agent.collect())

    v = cp.vllm
    assert v is not None and v.interval_s is not None and v.interval_s > 0
    gained = {
        "prompt_tokens_per_s": 20000,
        "generation_tokens_per_s": 5000,
        "preemptions_per_s": 4,
        "requests_finished_per_s": 100,
        "requests_failed_per_s": 10,  # abort + error
        "engine_steps_per_s": 250,
        "http_4xx_per_s": 3,
        "http_5xx_per_s": 2,
    }
    for rate, amount in gained.items():
        assert getattr(v.rates, rate) * v.interval_s == pytest.approx(amount), rate
    assert v.rates.prefix_cache_hit_pct == pytest.approx(30.0)
    assert set(v.latency) == {"ttft", "e2e"}  # nothing else was observed
    ttft = v.latency["ttft"]
    assert (ttft.count, ttft.mean_s) == (100, pytest.approx(0.07))
    # rank 50 lies a third into (0.06, 0.08]; rank 90 at the top of (0.08, 0.1];
    # rank 99 nine tenths into (0.1, 0.25].
    assert ttft.p50_s == pytest.approx(0.06 + 0.02 / 3)
    assert ttft.p90_s == pytest.approx(0.1)
    assert ttft.p99_s == pytest.approx(0.235)
    e2e = v.latency["e2e"]
    # Observations beyond the last finite bound are reported at that bound.
    assert (e2e.count, e2e.mean_s, e2e.p50_s, e2e.p99_s) == (10, 10000.0, 7680.0, 7680.0)
    assert v.forward_progress is True and v.restarted is False
    assert cp.lifecycle_state == LifecycleState.SERVING


async def test_it_reports_a_restart_when_a_counter_goes_backwards(fake_vllm, make_agent) -> None:
    agent = make_agent(fake_vllm.url)
    await agent.collect()
    fake_vllm.metrics_text = bump(SAMPLE, {series("vllm:generation_tokens_total"): -11000000})
    v = (await agent.collect()).vllm

    assert v is not None and v.restarted is True
    assert v.rates.generation_tokens_per_s is None and v.rates.engine_steps_per_s is None
    assert (v.latency, v.forward_progress) == ({}, None)
    assert v.totals["generation_tokens"] == 20532


async def test_it_reports_a_restart_when_the_start_time_changes(fake_vllm, make_agent) -> None:
    agent = make_agent(fake_vllm.url)
    await agent.collect()
    fake_vllm.metrics_text = bump(_advanced(SAMPLE), {"process_start_time_seconds": 60})
    v = (await agent.collect()).vllm

    assert v is not None and v.restarted is True
    assert (v.rates.prompt_tokens_per_s, v.latency, v.forward_progress) == (None, {}, None)


def _qwen(name: str, **labels: str) -> str:
    """Return a series of the v0.8 file: no engine label yet."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted({**labels, "model_name": QWEN}.items()))
    return f"{name}{{{inner}}}"


async def test_it_reads_the_old_names_of_renamed_metrics(fake_vllm, make_agent) -> None:
    old = (DATA / "vllm-metrics-v0.8.prom").read_text()
    fake_vllm.metrics_text = old
    agent = make_agent(fake_vllm.url)
    first = await agent.collect()
    fake_vllm.metrics_text = bump(
        old,
        {
            _qwen("vllm:gpu_prefix_cache_queries_total"): 200,
            _qwen("vllm:gpu_prefix_cache_hits_total"): 50,
            _qwen("vllm:time_per_output_token_seconds_bucket", le="0.05"): 10,
            _qwen("vllm:time_per_output_token_seconds_bucket", le="0.075"): 10,
            _qwen("vllm:time_per_output_token_seconds_bucket", le="+Inf"): 10,
        },
    )
    v = _roundtrip(await agent.collect()).vllm

    assert first.missing == {} and v is not None
    assert (v.model_name, v.engines) == (QWEN, 1)  # no engine label yet
    assert v.kv_cache_usage_pct == 87.5
    assert (v.totals["prefix_cache_queries"], v.totals["prefix_cache_hits"]) == (4200, 1050)
    assert v.rates.prefix_cache_hit_pct == pytest.approx(25.0)
    assert "requests_error" not in v.totals and v.totals["requests_finished"] == 200
    itl = v.latency["itl"]
    assert (itl.count, itl.p50_s) == (10, pytest.approx(0.0375))  # halfway into (0.025, 0.05]
    assert (v.cache.num_gpu_blocks, v.cache.kv_cache_size_tokens) == (8192, None)
    assert v.requests_waiting_capacity is None and v.sleep_state is None


async def test_it_ignores_unknown_families(fake_vllm, make_agent) -> None:
    fake_vllm.metrics_text = SAMPLE + (
        "# HELP vllm:future_metric_total Not invented yet.\n"
        "# TYPE vllm:future_metric_total counter\n"
        f"{series('vllm:future_metric_total')} 5.0\n"
        'vllm:lora_requests_info{max_lora="4",running_lora_adapters="a,b"} 1.78e+09\n'
        "# TYPE some_exporter_weird summary\n"
        'some_exporter_weird{quantile="0.5"} NaN\n'
    )
    cp = await make_agent(fake_vllm.url).collect()

    assert cp.missing == {}
    assert cp.vllm is not None and cp.vllm.requests_running == 96
    assert cp.vllm.totals["generation_tokens"] == 11020532


async def test_it_sums_data_parallel_engines_and_takes_the_fullest_kv_cache(
    fake_vllm, make_agent
) -> None:
    per_engine = {
        "vllm:num_requests_running": (10.0, 7.0),
        "vllm:kv_cache_usage_perc": (0.5, 0.9),
        "vllm:generation_tokens_total": (100.0, 50.0),
    }
    lines = [
        f"{series(name, engine=str(engine))} {value}"
        for name, values in per_engine.items()
        for engine, value in enumerate(values)
    ]
    fake_vllm.metrics_text = "\n".join(lines) + "\n"
    v = (await make_agent(fake_vllm.url).collect()).vllm

    assert v is not None
    assert (v.engines, v.requests_running, v.kv_cache_usage_pct) == (2, 17, 90.0)
    assert v.totals["generation_tokens"] == 150


async def test_it_says_what_is_missing_when_metrics_are_garbage(fake_vllm, make_agent) -> None:
    fake_vllm.metrics_text = "<html><body>502 Bad Gateway</body></html>\n"
    cp = _roundtrip(await make_agent(fake_vllm.url).collect())

    assert cp.vllm is not None and cp.vllm.health.ok
    assert "no vllm:* metrics" in cp.missing["vllm_metrics"]
    assert cp.vllm.requests_running is None and cp.vllm.totals == {}
    assert cp.lifecycle_state == LifecycleState.SERVING


async def test_it_says_what_is_missing_when_a_metric_line_is_malformed(
    fake_vllm, make_agent
) -> None:
    fake_vllm.metrics_text = SAMPLE.replace(
        f"{series('vllm:num_requests_running')} 96.0", 'vllm:num_requests_running{engine="0" 96'
    )
    cp = await make_agent(fake_vllm.url).collect()

    assert cp.missing["vllm_metrics"].startswith("unparseable /metrics")
    assert cp.vllm is not None and cp.vllm.requests_running is None


async def test_it_says_the_engine_is_dead_when_health_answers_503(fake_vllm, make_agent) -> None:
    fake_vllm.health_status = 503
    cp = _roundtrip(await make_agent(fake_vllm.url).collect())

    assert cp.vllm is not None
    assert (cp.vllm.health.ok, cp.vllm.health.status_code) == (False, 503)
    assert cp.lifecycle_state == LifecycleState.FAILED_ENGINE_DEAD
    assert cp.vllm.requests_running == 96  # /metrics still answered


async def test_it_says_degraded_while_elastic_ep_scales(fake_vllm, make_agent) -> None:
    fake_vllm.health_status = 503
    fake_vllm.health_body = b'{"error":"The model is currently scaling. Please try again later."}'
    cp = await make_agent(fake_vllm.url).collect()

    assert cp.lifecycle_state == LifecycleState.DEGRADED
    assert "scaling" in cp.lifecycle_detail


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Vanished:
    """A vLLM process that has exited (the psutil-like seam the simulator also uses)."""

    pid = 4242

    def is_running(self) -> bool:
        return False


async def test_it_says_stopped_when_nothing_listens_and_no_process_runs(make_agent) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    cp = _roundtrip(await make_agent(url, process=_Vanished()).collect())

    assert cp.vllm is None
    assert "cannot connect" in cp.missing["vllm"]
    assert cp.missing["process"] == "vLLM process 4242 is gone"
    assert cp.lifecycle_state == LifecycleState.STOPPED


async def test_it_says_initializing_when_the_process_lives_but_does_not_listen(make_agent) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    cp = await make_agent(url).collect()  # this test process plays vLLM

    assert cp.vllm is None and cp.process is not None
    assert cp.lifecycle_state == LifecycleState.INITIALIZING


async def test_it_gives_up_on_a_server_that_never_answers(fake_vllm, make_agent) -> None:
    fake_vllm.hang = True
    cp = _roundtrip(await make_agent(fake_vllm.url, scrape_timeout_s=0.2).collect())

    assert cp.vllm is None
    assert cp.missing["vllm"] == f"{fake_vllm.url}: no answer within 0.2 s"
    assert cp.collect_duration_s < 1.0
    assert cp.lifecycle_state == LifecycleState.DEGRADED


async def test_it_sees_no_forward_progress_when_counters_stand_still(fake_vllm, make_agent) -> None:
    patient = make_agent(fake_vllm.url)  # stall_after_s 15: one still interval is not a hang
    hasty = make_agent(fake_vllm.url, stall_after_s=0.0)
    for agent in (patient, hasty):
        await agent.collect()
    still_patient, still_hasty = await patient.collect(), await hasty.collect()

    assert still_patient.vllm is not None and still_patient.vllm.forward_progress is False
    assert still_patient.lifecycle_state == LifecycleState.SERVING
    assert still_hasty.lifecycle_state == LifecycleState.DEGRADED
    assert still_hasty.lifecycle_detail.startswith("no forward progress for ")
    assert still_hasty.lifecycle_detail.endswith(" s with 96 requests running")


async def test_it_does_not_call_an_idle_server_stalled(fake_vllm, make_agent) -> None:
    fake_vllm.metrics_text = SAMPLE.replace(
        f"{series('vllm:num_requests_running')} 96.0", f"{series('vllm:num_requests_running')} 0.0"
    )
    agent = make_agent(fake_vllm.url, stall_after_s=0.0)
    await agent.collect()
    cp = await agent.collect()

    assert cp.vllm is not None and cp.vllm.forward_progress is None
    assert cp.lifecycle_state == LifecycleState.SERVING


class _ProcessReportingNegativeMemory:
    """A psutil-like process whose platform reports nonsense (seen with some container runtimes)."""

    pid = 4242

    def oneshot(self):  # type: ignore[no-untyped-def]
        return contextlib.nullcontext()

    def memory_info(self):  # type: ignore[no-untyped-def]
        return SimpleNamespace(rss=-4096)

    def cpu_times(self):  # type: ignore[no-untyped-def]
        return SimpleNamespace(user=1.0, system=0.5)

    def num_fds(self) -> int:
        return 12

    def num_threads(self) -> int:
        return 3

    def create_time(self) -> float:
        return time.time() - 60

    def children(self, recursive: bool = False) -> list[object]:
        return []

    def is_running(self) -> bool:
        return True


async def test_it_drops_only_a_section_that_fails_the_format(fake_vllm, make_agent) -> None:  # type: ignore[no-untyped-def]
    agent = make_agent(fake_vllm.url, process=_ProcessReportingNegativeMemory())

    cp = await agent.collect()

    assert cp.process is None
    assert cp.missing["process"] == "invalid: Expected `float` >= 0.0 - at `$.process.rss_bytes`"
    assert cp.vllm is not None and cp.vllm.requests_running == 96.0
    assert from_dict(to_dict(cp)) == cp
