"""Turn the samples of one vLLM /metrics body into a MetricsReading (plain data, no I/O).

Names are the real ones from vLLM's `/metrics`; each tuple lists the current name first and
the older names of renamed metrics after it (vLLM 0.8 to today). The first one present wins,
so a server exposing both during a deprecation window is not counted twice.

Gauges and counters are summed over the `engine` label (data-parallel engines); KV-cache usage
is the fullest engine's. Families not named here are dropped before parsing, so unknown and
future families cost nothing and never fail a scrape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.checkpoint import ApiServerProcess, KvCacheInfo
from agent.collectors.exposition import Exposition
from agent.collectors.histogram import Histogram

RUNNING = ("vllm:num_requests_running",)
WAITING = ("vllm:num_requests_waiting",)
WAITING_BY_REASON = "vllm:num_requests_waiting_by_reason"
SLEEP_STATE = "vllm:engine_sleep_state"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
CACHE_CONFIG = "vllm:cache_config_info"
REQUEST_SUCCESS = "vllm:request_success_total"
HTTP_REQUESTS = "http_requests_total"

# Vllm.totals key -> counter sample names, current first.
COUNTERS = {
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
    "preemptions": ("vllm:num_preemptions_total",),
    "prefix_cache_queries": (
        "vllm:prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries_total",
    ),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "engine_steps": ("vllm:iteration_tokens_total_count",),
    # Output lengths of finished requests: their difference over a span is the mean length of
    # the requests that finished in it, unlike generation_tokens, which running ones swell.
    "finished_output_tokens": ("vllm:request_generation_tokens_sum",),
    "finished_output_requests": ("vllm:request_generation_tokens_count",),
}
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")

# Vllm.latency key -> histogram family names, current first.
HISTOGRAMS = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "tpot": ("vllm:request_time_per_output_token_seconds",),
    "e2e": ("vllm:e2e_request_latency_seconds",),
    "queue": ("vllm:request_queue_time_seconds",),
    "prefill": ("vllm:request_prefill_time_seconds",),
    "decode": ("vllm:request_decode_time_seconds",),
    "inference": ("vllm:request_inference_time_seconds",),
}

# V0 engines reported throughput as gauges; used only when the token counters are absent.
THROUGHPUT_GAUGES = {
    "prompt_tokens": "vllm:avg_prompt_throughput_toks_per_s",
    "generation_tokens": "vllm:avg_generation_throughput_toks_per_s",
}

API_SERVER = {
    "rss_bytes": "process_resident_memory_bytes",
    "cpu_s": "process_cpu_seconds_total",
    "open_fds": "process_open_fds",
    "max_fds": "process_max_fds",
    "start_time": "process_start_time_seconds",
}


def wanted_sample_names() -> frozenset[str]:
    """Return every sample name the reader looks at; the rest of /metrics is dropped unparsed."""
    names = {WAITING_BY_REASON, SLEEP_STATE, CACHE_CONFIG, REQUEST_SUCCESS, HTTP_REQUESTS}
    names.update(RUNNING, WAITING, KV_USAGE, THROUGHPUT_GAUGES.values(), API_SERVER.values())
    for aliases in COUNTERS.values():
        names.update(aliases)
    for aliases in HISTOGRAMS.values():
        for family in aliases:
            names.update((f"{family}_bucket", f"{family}_count", f"{family}_sum"))
    return frozenset(names)


@dataclass(kw_only=True, slots=True)
class MetricsReading:
    """What one scrape of /metrics says, before comparing it with the previous one."""

    model_name: str | None = None
    engines: int = 0
    requests_running: float | None = None
    requests_waiting: float | None = None
    requests_waiting_capacity: float | None = None
    requests_waiting_deferred: float | None = None
    kv_cache_usage_pct: float | None = None
    sleep_state: str | None = None
    cache: KvCacheInfo = field(default_factory=KvCacheInfo)
    totals: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    throughput_gauges: dict[str, float] = field(default_factory=dict)
    api_server: ApiServerProcess | None = None
    sample_lines: int = 0

    @property
    def has_engine_metrics(self) -> bool:
        return self.engines > 0


def read_metrics(exp: Exposition) -> MetricsReading:
    """Return the reading of one parsed /metrics body."""
    kv = _first(exp, KV_USAGE, max)
    return MetricsReading(
        model_name=_model_name(exp),
        engines=_engine_count(exp),
        requests_running=_first(exp, RUNNING, sum),
        requests_waiting=_first(exp, WAITING, sum),
        requests_waiting_capacity=_labelled_sum(exp, WAITING_BY_REASON, "reason", "capacity"),
        requests_waiting_deferred=_labelled_sum(exp, WAITING_BY_REASON, "reason", "deferred"),
        kv_cache_usage_pct=None if kv is None else min(kv * 100.0, 100.0),
        sleep_state=_sleep_state(exp),
        cache=_cache_info(exp),
        totals=_totals(exp),
        histograms=_histograms(exp),
        throughput_gauges=_throughput_gauges(exp),
        api_server=_api_server(exp),
        sample_lines=exp.sample_lines,
    )


def _values(exp: Exposition, name: str) -> list[float]:
    # NaN and negative values cannot be counts, and would make the checkpoint invalid.
    return [v for _, v in exp.get(name) if math.isfinite(v) and v >= 0]


def _first(
    exp: Exposition, aliases: tuple[str, ...], combine: Callable[[Iterable[float]], float]
) -> float | None:
    for name in aliases:
        values = _values(exp, name)
        if values:
            return float(combine(values))
    return None


def _labelled_sum(exp: Exposition, name: str, label: str, value: str) -> float | None:
    values = [v for labels, v in exp.get(name) if labels.get(label) == value and v >= 0]
    return sum(values) if values else None


def _model_name(exp: Exposition) -> str | None:
    for name, samples in exp.samples.items():
        if name.startswith("vllm:"):
            for labels, _ in samples:
                if "model_name" in labels:
                    return labels["model_name"]
    return None


def _engine_count(exp: Exposition) -> int:
    engines: set[str] = set()
    seen_vllm = False
    for name, samples in exp.samples.items():
        if name.startswith("vllm:"):
            seen_vllm = True
            engines.update(labels["engine"] for labels, _ in samples if "engine" in labels)
    # vLLM before the `engine` label (0.8) still ran one engine.
    return len(engines) or int(seen_vllm)


def _sleep_state(exp: Exposition) -> str | None:
    states = [labels.get("sleep_state") for labels, v in exp.get(SLEEP_STATE) if v >= 1]
    asleep = [s for s in states if s and s != "awake"]
    if asleep:
        return asleep[0]
    return "awake" if "awake" in states else None


def _cache_info(exp: Exposition) -> KvCacheInfo:
    samples = exp.get(CACHE_CONFIG)
    if not samples:
        return KvCacheInfo()
    # Label values are Python str() of the config fields; "None" means unset.
    labels = samples[0][0]
    dtype = labels.get("cache_dtype")
    return KvCacheInfo(
        num_gpu_blocks=_label_int(labels, "num_gpu_blocks"),
        block_size=_label_int(labels, "block_size"),
        kv_cache_size_tokens=_label_int(labels, "kv_cache_size_tokens"),
        max_concurrency=_label_float(labels, "kv_cache_max_concurrency"),
        gpu_memory_utilization=_label_float(labels, "gpu_memory_utilization"),
        cache_dtype=None if dtype in (None, "None", "") else dtype,
    )


def _label_int(labels: dict[str, str], key: str) -> int | None:
    value = labels.get(key, "")
    return int(value) if value.isdigit() else None


def _label_float(labels: dict[str, str], key: str) -> float | None:
    try:
        value = float(labels.get(key, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _totals(exp: Exposition) -> dict[str, float]:
    totals: dict[str, float] = {}
    for key, aliases in COUNTERS.items():
        value = _first(exp, aliases, sum)
        if value is not None:
            totals[key] = value
    totals.update(_finished_totals(exp))
    totals.update(_http_totals(exp))
    return totals


def _finished_totals(exp: Exposition) -> dict[str, float]:
    # vllm:request_success counts every finished request, aborts and errors included.
    by_reason: dict[str, float] = {}
    for labels, value in exp.get(REQUEST_SUCCESS):
        reason = labels.get("finished_reason", "")
        if math.isfinite(value) and value >= 0:
            by_reason[reason] = by_reason.get(reason, 0.0) + value
    if not by_reason:
        return {}
    totals = {f"requests_{r}": v for r, v in by_reason.items() if r in FINISHED_REASONS}
    totals["requests_finished"] = sum(by_reason.values())
    return totals


def _http_totals(exp: Exposition) -> dict[str, float]:
    samples = exp.get(HTTP_REQUESTS)
    if not samples:
        return {}
    # The instrumentator creates a status series on its first request, so an absent class
    # is zero once the family exists. Status is grouped ("5xx"), or exact ("503") when not.
    totals = {"http_requests_2xx": 0.0, "http_requests_4xx": 0.0, "http_requests_5xx": 0.0}
    for labels, value in samples:
        key = f"http_requests_{labels.get('status', '')[:1]}xx"
        if key in totals and math.isfinite(value) and value >= 0:
            totals[key] += value
    return totals


def _histograms(exp: Exposition) -> dict[str, Histogram]:
    histograms: dict[str, Histogram] = {}
    for key, aliases in HISTOGRAMS.items():
        for family in aliases:
            if exp.has(f"{family}_bucket"):
                histograms[key] = _histogram(exp, family)
                break
    return histograms


def _histogram(exp: Exposition, family: str) -> Histogram:
    buckets: dict[float, float] = {}
    for labels, value in exp.get(f"{family}_bucket"):
        try:
            upper = float(labels.get("le", ""))
        except ValueError:
            continue
        buckets[upper] = buckets.get(upper, 0.0) + value
    return Histogram(
        buckets=sorted(buckets.items()),
        count=sum(_values(exp, f"{family}_count")),
        sum=sum(_values(exp, f"{family}_sum")),
    )


def _throughput_gauges(exp: Exposition) -> dict[str, float]:
    gauges = {key: _first(exp, (name,), sum) for key, name in THROUGHPUT_GAUGES.items()}
    return {key: value for key, value in gauges.items() if value is not None}


def _api_server(exp: Exposition) -> ApiServerProcess | None:
    values = {key: _first(exp, (name,), sum) for key, name in API_SERVER.items()}
    if all(value is None for value in values.values()):
        return None
    open_fds, max_fds = values.pop("open_fds"), values.pop("max_fds")
    return ApiServerProcess(
        open_fds=None if open_fds is None else int(open_fds),
        max_fds=None if max_fds is None else int(max_fds),
        **values,
    )
