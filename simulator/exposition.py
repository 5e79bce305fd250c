"""The /metrics body of a simulated server, rendered by prometheus_client itself.

`VllmCollector` turns the server's state into metric families in vLLM's order (python_gc,
python_info, process, vllm:*, cache_config_info, http) and `render()` runs them through
`generate_latest`, caching the text until the simulation moves, so a poll storm costs a
dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.samples import Sample

from simulator.engine import SimulatedVllm
from simulator.histogram import Histogram
from simulator.run import ServerRun
from simulator.stats import EngineStats, HttpStats
from simulator.vllm_metrics import (
    CACHE_CONFIG_HELP,
    COUNTERS,
    GAUGES,
    HISTOGRAMS,
    HTTP_HELP,
    SLEEP_STATES,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ("engine", "model_name")
MAX_FDS = 1_048_576


class VllmCollector:
    """A prometheus_client collector over one simulated server's current run."""

    def __init__(self, sim: SimulatedVllm) -> None:
        self.sim = sim

    def collect(self) -> Iterator[Metric]:
        run = self.sim.run
        if run is None or run.stats is None:
            return
        yield from _python_families(run, self.sim.t)
        yield from _process_families(run)
        if not run.args.disable_log_stats:  # the flag removes every vllm:* family
            yield from _engine_families(run)
            yield _cache_config(run)
        yield from _http_families(run.http)


class MetricsPage:
    """The rendered /metrics body of one server, re-rendered only after the state changed."""

    def __init__(self, sim: SimulatedVllm) -> None:
        self.sim = sim
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(VllmCollector(sim))
        self._version = -1
        self._body = b""
        self.renders = 0

    def body(self) -> bytes:
        if self._version != self.sim.version:
            self._body = generate_latest(self.registry)
            self._version = self.sim.version
            self.renders += 1
        return self._body


def _python_families(run: ServerRun, t: float) -> Iterator[Metric]:
    # Garbage collection follows the requests the API server handled and its uptime.
    uptime = max(0.0, t - run.started_t)
    served = sum(run.stats.finished.values()) if run.stats else 0
    gen0 = int(uptime * 8.2 + served * 0.4)
    collected = (gen0 * 37, gen0 * 6 + 11, gen0 + 405)
    collections = (gen0, gen0 // 11, gen0 // 148)
    for name, help_, values in (
        ("python_gc_objects_collected", "Objects collected during gc", collected),
        ("python_gc_objects_uncollectable", "Uncollectable objects found during GC", (0, 0, 0)),
        ("python_gc_collections", "Number of times this generation was collected", collections),
    ):
        family = CounterMetricFamily(name, help_, labels=["generation"])
        for generation, value in enumerate(values):
            family.add_metric([str(generation)], float(value))
        yield family
    info = GaugeMetricFamily(
        "python_info",
        "Python platform information",
        labels=["implementation", "major", "minor", "patchlevel", "version"],
    )
    info.add_metric(["CPython", "3", "12", "12", "3.12.12"], 1.0)
    yield info


def _process_families(run: ServerRun) -> Iterator[Metric]:
    api = run.proc
    yield GaugeMetricFamily(
        "process_virtual_memory_bytes", "Virtual memory size in bytes.", value=int(api.vms_bytes)
    )
    yield GaugeMetricFamily(
        "process_resident_memory_bytes", "Resident memory size in bytes.", value=int(api.rss_bytes)
    )
    yield GaugeMetricFamily(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        value=round(api.created_at, 2),
    )
    yield CounterMetricFamily(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        value=round(api.cpu_user_s + api.cpu_system_s, 2),
    )
    yield GaugeMetricFamily(
        "process_open_fds", "Number of open file descriptors.", value=int(api.fds)
    )
    yield GaugeMetricFamily(
        "process_max_fds", "Maximum number of open file descriptors.", value=MAX_FDS
    )


def _engine_families(run: ServerRun) -> Iterator[Metric]:
    stats, sched = run.stats, run.scheduler
    assert stats is not None and sched is not None
    labels = ["0", run.args.model_name]
    created = stats.created_at
    waiting = len(sched.waiting)
    level = run.sleep_level
    sleep = {"awake": level == 0, "weights_offloaded": level == 1, "discard_all": level == 2}
    gauges: dict[str, list[tuple[tuple[str, ...], float]]] = {
        "vllm:num_requests_running": [((), len(sched.running))],
        "vllm:num_requests_waiting": [((), waiting)],
        "vllm:num_requests_waiting_by_reason": [(("capacity",), waiting), (("deferred",), 0)],
        "vllm:engine_sleep_state": [((s,), sleep[s]) for s in SLEEP_STATES],
        "vllm:kv_cache_usage_perc": [((), round(sched.kv_usage, 6))],
    }
    extra = {
        "vllm:num_requests_waiting_by_reason": ["reason"],
        "vllm:engine_sleep_state": ["sleep_state"],
    }
    for name, help_ in GAUGES.items():
        family = GaugeMetricFamily(name, help_, labels=[*LABELS, *extra.get(name, [])])
        for extra_values, value in gauges[name]:
            family.add_metric([*labels, *extra_values], float(value))
        yield family
    yield from _engine_counters(stats, labels, created)
    for name, (help_, _) in HISTOGRAMS.items():
        yield _histogram(name, help_, LABELS, labels, stats.hist[name], created)


def _engine_counters(stats: EngineStats, labels: list[str], created: float) -> Iterator[Metric]:
    by_source = stats.prompt_by_source
    cached = by_source["local_cache_hit"] + by_source["external_kv_transfer"]
    plain = {
        "vllm:prefix_cache_queries": stats.prefix_queries,
        "vllm:prefix_cache_hits": stats.prefix_hits,
        "vllm:external_prefix_cache_queries": 0,
        "vllm:external_prefix_cache_hits": 0,
        "vllm:mm_cache_queries": 0,
        "vllm:mm_cache_hits": 0,
        "vllm:num_preemptions": stats.preemptions,
        "vllm:prompt_tokens": stats.prompt_tokens,
        "vllm:prompt_tokens_cached": cached,
        "vllm:generation_tokens": stats.generation_tokens,
    }
    by_label = {
        "vllm:prompt_tokens_by_source": ("source", stats.prompt_by_source),
        "vllm:request_success": ("finished_reason", stats.finished),
    }
    for name, help_ in COUNTERS.items():
        if name in by_label:
            label, values = by_label[name]
            family = CounterMetricFamily(name, help_, labels=[*LABELS, label])
            for key, value in values.items():
                family.add_metric([*labels, key], float(value), created=created)
        else:
            family = CounterMetricFamily(name, help_, labels=list(LABELS))
            family.add_metric(labels, float(plain[name]), created=created)
        yield family


def _histogram(
    name: str,
    help_: str,
    label_names: Sequence[str],
    labels: Sequence[str],
    hist: Histogram,
    created: float,
) -> Metric:
    family = HistogramMetricFamily(name, help_, labels=list(label_names))
    family.add_metric(labels, hist.cumulative(), hist.sum)
    _add_created(family, dict(zip(label_names, labels, strict=True)), created)
    return family


def _add_created(family: Metric, labels: dict[str, str], created: float) -> None:
    # HistogramMetricFamily and SummaryMetricFamily take no `created`; add the sample the
    # way prometheus_client's own Histogram does, and generate_latest moves it to _created.
    family.samples.append(Sample(family.name + "_created", labels, created))


def _cache_config(run: ServerRun) -> Metric:
    plan, a = run.plan, run.args
    assert plan is not None
    values = {
        "block_size": str(a.block_size),
        "cache_dtype": a.kv_cache_dtype,
        "calculate_kv_scales": "False",
        "enable_prefix_caching": str(a.enable_prefix_caching),
        "engine": "0",
        "gpu_memory_utilization": str(a.gpu_memory_utilization),
        "hash_block_size": str(a.block_size),
        "is_attention_free": "False",
        "kv_cache_dtype_skip_layers": "[]",
        "kv_cache_max_concurrency": str(plan.max_concurrency(a.max_model_len or 1)),
        "kv_cache_memory_bytes": "None",
        "kv_cache_size_tokens": str(plan.kv_cache_size_tokens),
        "kv_offloading_backend": "native",
        "kv_offloading_size": "None",
        "kv_sharing_fast_prefill": "False",
        "mamba_block_size": "None",
        "mamba_cache_dtype": "auto",
        "mamba_cache_mode": "none",
        "mamba_page_size_padded": "None",
        "mamba_ssm_cache_dtype": "auto",
        "num_cpu_blocks": "None",
        "num_gpu_blocks": str(plan.num_gpu_blocks),
        "num_gpu_blocks_override": str(a.num_gpu_blocks_override),
        "prefix_caching_hash_algo": "sha256",
        "sliding_window": "None",
        "user_specified_block_size": str(a.block_size != 16),
        "user_specified_mamba_block_size": "False",
    }
    family = GaugeMetricFamily("vllm:cache_config_info", CACHE_CONFIG_HELP, labels=list(values))
    family.add_metric(list(values.values()), 1.0)
    return family


def _http_families(http: HttpStats) -> Iterator[Metric]:
    name = "http_requests"
    requests = CounterMetricFamily(name, HTTP_HELP[name], labels=["handler", "method", "status"])
    for (handler, method, status), (count, created) in http.requests.items():
        requests.add_metric([handler, method, status], count, created=created)
    yield requests
    for name, table in (
        ("http_request_size_bytes", http.request_size),
        ("http_response_size_bytes", http.response_size),
    ):
        summary = SummaryMetricFamily(name, HTTP_HELP[name], labels=["handler"])
        for handler, (count, total, created) in table.items():
            summary.add_metric([handler], int(count), total)
            _add_created(summary, {"handler": handler}, created)
        yield summary
    name = "http_request_duration_highr_seconds"
    yield _histogram(name, HTTP_HELP[name], (), [], http.highr, http.created_at)
    name = "http_request_duration_seconds"
    duration = HistogramMetricFamily(name, HTTP_HELP[name], labels=["handler", "method"])
    for (handler, method), (hist, created) in http.duration.items():
        duration.add_metric([handler, method], hist.cumulative(), hist.sum)
        _add_created(duration, {"handler": handler, "method": method}, created)
    yield duration
