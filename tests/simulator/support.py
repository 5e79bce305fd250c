"""Helpers for the simulator tests: build a server, drive it, read its /metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from simulator.engine import Phase, SimulatedVllm
from simulator.exposition import MetricsPage
from simulator.histogram import Histogram
from simulator.scenario import Scenario, load_scenario, parse_scenario

TICK_S = 0.25
EPOCH = 1_781_503_200.0
DATA = Path(__file__).resolve().parent.parent / "data"
SAMPLE_TEXT = (DATA / "vllm-metrics-sample.prom").read_text()
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
FINISHED_HISTOGRAMS = (
    "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens",
    "vllm:request_max_num_generation_tokens",
    "vllm:request_params_n",
    "vllm:request_time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_inference_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
    "vllm:request_prefill_kv_computed_tokens",
)


def make_sim(scenario: str | Scenario = "healthy", seed: int = 1, **load: Any) -> SimulatedVllm:
    """Return a server running `scenario`, with `load` overriding its [load] fields."""
    sc = load_scenario(scenario) if isinstance(scenario, str) else scenario
    if load:
        sc = replace(sc, load=replace(sc.load, **load))
    return SimulatedVllm("gpu-01", sc, seed=seed, epoch=EPOCH)


def scenario_from(data: dict[str, Any], name: str = "custom") -> Scenario:
    return parse_scenario(name, data)


def run_for(sim: SimulatedVllm, seconds: float) -> None:
    for _ in range(round(seconds / TICK_S)):
        sim.step(TICK_S)


def run_until(sim: SimulatedVllm, done: Callable[[SimulatedVllm], bool], limit_s: float) -> None:
    """Step until `done(sim)`; fail if it takes longer than `limit_s` simulated seconds."""
    for _ in range(round(limit_s / TICK_S)):
        if done(sim):
            return
        sim.step(TICK_S)
    raise AssertionError(f"not reached within {limit_s} s; phase {sim.phase}")


def serving(sim: SimulatedVllm) -> bool:
    return sim.phase is Phase.SERVING


def uptime(sim: SimulatedVllm) -> float:
    assert sim.run is not None
    return sim.run.uptime(sim.t)


def run_to_uptime(sim: SimulatedVllm, seconds: float) -> None:
    run_until(sim, serving, 60)
    run_until(sim, lambda s: uptime(s) >= seconds, seconds + 1)


def render(sim: SimulatedVllm) -> str:
    return MetricsPage(sim).body().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of a /metrics text, keyed by (name, labels without le=... kept)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def value(text_samples: dict[Any, float], name: str, **labels: str) -> float:
    """Return one sample; the engine labels are filled in for vllm:* names."""
    if name.startswith("vllm:"):
        labels = {"engine": "0", "model_name": MODEL, **labels}
    return text_samples[(name, frozenset(labels.items()))]


def total(text_samples: dict[Any, float], name: str) -> float:
    return sum(v for (n, _), v in text_samples.items() if n == name)


def window_quantile(before: Histogram, after: Histogram, q: float) -> float:
    """Return the `q` quantile of what `after` observed since the snapshot `before`."""
    delta = Histogram(after.bounds)
    delta.counts = [a - b for a, b in zip(after.counts, before.counts, strict=True)]
    return delta.quantile(q)


def snapshot(hist: Histogram) -> Histogram:
    copy = Histogram(hist.bounds)
    copy.counts = list(hist.counts)
    copy.sum = hist.sum
    return copy


def log_count(sim: SimulatedVllm, text: str) -> int:
    return sum(text in line for line in sim.log.lines)
