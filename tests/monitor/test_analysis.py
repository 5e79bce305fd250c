from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from agent.checkpoint import decode, encode
from monitor import analysis, ingest, models_cache, polling
from monitor.models import Forecast, Host, Prediction
from tests.factories import GIB, make_checkpoint

pytestmark = pytest.mark.django_db
T0 = 1_790_000_000.0


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    analysis._analyzers.clear()
    models_cache.forget()


def _poll(host: Host, at: float, **changes) -> analysis.AnalysisReport:  # type: ignore[no-untyped-def]
    host.refresh_from_db()
    target = polling.PollTarget(host_id=host.pk, name=host.name, url=host.agent_url, token="t")
    cp = decode(encode(make_checkpoint(host=host.name, collected_at=at, **changes)))
    result = polling.PollResult(target=target, elapsed_s=0.01, checkpoint=cp)
    now = datetime.fromtimestamp(at, tz=UTC)
    report = ingest.store_poll_results({host.pk: host}, [result], now)
    return analysis.analyze_stored(report.checkpoints, now)


@pytest.fixture
def host() -> Host:
    return Host.objects.create(name="gpu-01", agent_url="http://127.0.0.1:1", agent_token="t")


def test_it_predicts_a_leak_running_into_oom_and_keeps_one_open_prediction(host: Host) -> None:
    # 74 GiB flat for two minutes (vLLM's pre-allocation), then +40 MiB/s towards 80 GiB:
    # about 78 GiB at the end, a minute or so from full.
    for i in range(46):
        leaked = max(0, i - 24) * 5 * 40 * 2**20
        findings = _poll(host, T0 + 5 * i, gpu_memory_used_bytes=74 * GIB + leaked)

    open_rows = list(Prediction.objects.filter(closed_at__isnull=True))
    assert [p.failure_type for p in open_rows] == ["cuda_oom"]
    oom = open_rows[0]
    assert oom.probability >= 0.6 and oom.time_to_failure_s is not None
    assert 0 < oom.time_to_failure_s < 300
    assert oom.expected_failure_at is not None
    assert any(e["source"].startswith("detector:") for e in oom.evidence)
    assert "lower_gpu_memory_utilization" in oom.recommended_mitigations
    host.refresh_from_db()
    assert host.risk == oom.probability and host.top_prediction["failure_type"] == "cuda_oom"
    forecast = Forecast.objects.get(host=host, metric="gpu_mem_used_pct")
    assert forecast.values[-1] > forecast.values[0]
    assert len(forecast.lower) == len(forecast.upper) == len(forecast.values)
    assert findings.forecasts[host.pk]


def test_it_predicts_nothing_for_a_steady_healthy_host(host: Host) -> None:
    for i in range(60):
        _poll(host, T0 + 5 * i, kv_cache_usage_pct=30.0 + (i % 3), requests_running=40.0)

    assert not Prediction.objects.exists()
    host.refresh_from_db()
    assert host.risk == 0.0


def test_it_closes_a_prediction_once_the_leak_is_gone(host: Host) -> None:
    for i in range(46):
        leaked = max(0, i - 24) * 5 * 40 * 2**20
        _poll(host, T0 + 5 * i, gpu_memory_used_bytes=74 * GIB + leaked)
    assert Prediction.objects.filter(closed_at__isnull=True).exists()
    # A restart frees the memory; the host runs flat again for five minutes.
    for i in range(46, 116):
        _poll(host, T0 + 5 * i, gpu_memory_used_bytes=74 * GIB, agent_started_at=T0 + 300)

    row = Prediction.objects.get(failure_type="cuda_oom")
    assert row.closed_at is not None and row.outcome == "lapsed"
    host.refresh_from_db()
    assert host.risk == 0.0


def test_it_fills_the_checkpoints_another_worker_stored_before_analysing(host: Host) -> None:
    for i in range(30):
        _poll(host, T0 + 5 * i)
    # Another worker process stored (and analysed) the next ten: this process never saw them.
    analyzer = analysis._analyzers[host.pk][0]
    for i in range(30, 40):
        host.refresh_from_db()
        target = polling.PollTarget(host_id=host.pk, name=host.name, url=host.agent_url, token="t")
        cp = decode(encode(make_checkpoint(host=host.name, collected_at=T0 + 5 * i)))
        now = datetime.fromtimestamp(T0 + 5 * i, tz=UTC)
        ingest.store_poll_results({host.pk: host}, [polling.PollResult(target, 0.01, cp)], now)

    _poll(host, T0 + 200)

    assert analysis._analyzers[host.pk][0] is analyzer  # the same one, not rebuilt
    assert [round(r.t - T0) for r in list(analyzer._rows)[-12:]] == [
        5 * i for i in range(29, 40)
    ] + [200]


def test_a_reading_no_host_can_have_is_missing_and_the_forecast_made_without_it(
    host: Host,
) -> None:
    # A broken exporter's 1e200 waiting requests is a valid checkpoint (a non-negative float),
    # but its square overflows: a band from it would not be a number, which a JSON column
    # refuses, and the host's other forecasts are stored in the same statement.
    for i in range(30):
        _poll(host, T0 + 5 * i, requests_waiting=1e200 if i == 20 else 2.0 + i % 3)

    queue = Forecast.objects.get(host=host, metric="requests_waiting")
    assert len(queue.values) == 10
    assert all(0 <= x < 10 for x in queue.values + queue.lower + queue.upper)


# Every figure a checkpoint validates with (non-negative floats, percentages up to 100), at its
# extremes: a denormal total, a square that overflows, a float's largest value.
EXTREMES = [0.0, 5e-324, 1e-300, 1.0, 1e17, 1e18, 1e200, 1.7e308]
FIGURES = ["requests_running", "requests_waiting", "generation_tokens_per_s", "prompt_tokens_per_s",
           "ttft_p99_s", "itl_p99_s", "gpu_memory_used_bytes", "gpu_memory_total_bytes",
           "gpu_temperature_c", "kv_cache_usage_pct"]  # fmt: skip


@pytest.mark.parametrize("seed", range(8))
def test_no_extreme_reading_breaks_the_analysis_or_what_it_stores(host: Host, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(50):
        changes = {}
        if rng.random() < 0.5:
            for name in rng.sample(FIGURES, rng.randint(1, 4)):
                value = rng.choice(EXTREMES)
                changes[name] = min(value, 100.0) if name.endswith("_pct") else value
        _poll(host, T0 + 5 * i, **changes)  # raises on a NaN or infinity a JSON column refuses

    assert Forecast.objects.filter(host=host).count() == 4
    host.refresh_from_db()
    assert host.latest["collected_at"] == T0 + 5 * 49


def test_the_forecast_says_when_a_guardrails_line_will_be_crossed(host: Host) -> None:
    from healing import defaults, triggers
    from healing.models import GuardrailPolicy, StrategySetting
    from monitor.tasks import analyze_batch

    defaults.load(GuardrailPolicy, StrategySetting)  # kv_cache_near_full: KV above 95 %
    triggers._rails = None
    for i in range(30):  # KV climbing 0.25 %/s: 77.5 % at the last poll
        _poll(host, T0 + 5 * i, kv_cache_usage_pct=40.0 + 1.25 * i, requests_running=40.0 + i)
    at = T0 + 150.0
    target = polling.PollTarget(host_id=host.pk, name=host.name, url=host.agent_url, token="t")
    cp = decode(encode(make_checkpoint(host=host.name, collected_at=at, kv_cache_usage_pct=77.5,
                                       requests_running=70.0)))  # fmt: skip
    now = datetime.fromtimestamp(at, tz=UTC)
    ingest.store_poll_results(
        {host.pk: host}, [polling.PollResult(target=target, elapsed_s=0.01, checkpoint=cp)], now
    )

    analyze_batch([host.pk], now.isoformat())

    crossings = Forecast.objects.get(host=host, metric="kv_cache_usage_pct").crossings
    guardrail, full = crossings["guardrail:kv_cache_near_full"], crossings["kv_cache_full"]
    # 17.5 points to go at 0.25 a second: about 70 s, give or take the trend's damping.
    assert guardrail is not None and 40 <= guardrail - at <= 120
    assert full is not None and guardrail < full
