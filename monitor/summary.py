"""What the dashboard shows of a checkpoint, and what a poll says about a host. Pure."""

from __future__ import annotations

from typing import Any, TypeGuard

from agent.checkpoint import Checkpoint
from agent.lifecycle import LifecycleState
from learning.window import MAX_READING, SLOWDOWN_REASONS

# Series drawn on the host page, in the order the charts use them.
SERIES_KEYS = (
    "gpu_mem_used_gb",
    "gpu_mem_total_gb",
    "gpu_mem_fullest_used_gb",
    "gpu_mem_fullest_total_gb",
    "kv_cache_usage_pct",
    "requests_running",
    "requests_waiting",
    "prompt_tokens_per_s",
    "generation_tokens_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "itl_p50_s",
    "itl_p99_s",
    "e2e_p50_s",
    "e2e_p99_s",
)

GB = 1024**3


def summarize(cp: Checkpoint) -> dict[str, Any]:
    """Return the flat, JSON-ready figures of a checkpoint that the fleet and host pages show."""
    vllm = cp.vllm
    used, total = cp.gpu_memory_used_bytes, cp.gpu_memory_total_bytes
    fullest = cp.fullest_gpu_memory or (None, None)
    temps = [g.temperature_c for g in cp.gpus if g.temperature_c is not None]
    utils = [g.utilization_gpu_pct for g in cp.gpus if g.utilization_gpu_pct is not None]
    summary: dict[str, Any] = {
        "collected_at": cp.collected_at,
        "seq": cp.seq,
        "agent_started_at": cp.agent_started_at,
        "lifecycle_state": cp.lifecycle_state.value,
        "gpu_count": len(cp.gpus),
        "gpu_mem_used_gb": _div(used, GB),
        "gpu_mem_total_gb": _div(total, GB),
        # The GPU that runs out first: what the host page charts and forecasts.
        "gpu_mem_fullest_used_gb": _div(fullest[0], GB),
        "gpu_mem_fullest_total_gb": _div(fullest[1], GB),
        "gpu_mem_used_pct": _round(cp.gpu_memory_used_pct),
        "gpu_temperature_c": _round(max(temps)) if temps else None,
        "gpu_utilization_pct": _round(sum(utils) / len(utils)) if utils else None,
        "health_ok": vllm.health.ok if vllm else None,
        "forward_progress": vllm.forward_progress if vllm else None,
        "missing": sorted(cp.missing),
        "mode": cp.mode,
        "startup": _startup_figures(cp),
        "machine": _machine_figures(cp),
        "gpus": _gpu_figures(cp),
    }
    summary.update(_vllm_figures(cp))
    return summary


def _vllm_figures(cp: Checkpoint) -> dict[str, Any]:
    vllm = cp.vllm
    if vllm is None:
        return {}
    figures: dict[str, Any] = {
        "kv_cache_usage_pct": _round(vllm.kv_cache_usage_pct),
        "requests_running": _round(vllm.requests_running),
        "requests_waiting": _round(vllm.requests_waiting),
        "prompt_tokens_per_s": _round(vllm.rates.prompt_tokens_per_s),
        "generation_tokens_per_s": _round(vllm.rates.generation_tokens_per_s),
        "preemptions_per_s": _round(vllm.rates.preemptions_per_s),
    }
    for key in ("ttft", "itl", "e2e"):
        latency = vllm.latency.get(key)
        figures[f"{key}_p50_s"] = round(latency.p50_s, 4) if latency else None
        figures[f"{key}_p99_s"] = round(latency.p99_s, 4) if latency else None
    return figures


def row_figures(latest: dict[str, Any]) -> dict[str, str]:
    """Return the fleet row's cells as text ("-" where not measured), from `summarize` output.

    Formatted here rather than with template filters: a fleet row is re-rendered for every
    poll of every host, and filters cost several times more than these f-strings.
    """
    used, total, pct = (
        latest.get(k) for k in ("gpu_mem_used_gb", "gpu_mem_total_gb", "gpu_mem_used_pct")
    )
    running, waiting = latest.get("requests_running"), latest.get("requests_waiting")
    return {
        "gpu_mem": _gpu_mem(used, total, pct, latest.get("gpu_count") or 0),
        "kv": _fmt(latest.get("kv_cache_usage_pct"), "{:.1f}%"),
        "requests": "-" if running is None else f"{running:.0f} / {waiting or 0:.0f}",
        "tokens_per_s": _fmt(latest.get("generation_tokens_per_s"), "{:.0f}"),
        "ttft_p99": _fmt_ms(latest.get("ttft_p99_s")),
        "itl_p99": _fmt_ms(latest.get("itl_p99_s")),
    }


def risk_text(top: dict[str, Any]) -> str:
    """Return the fleet row's risk cell: "cuda_oom 87 %" (the countdown is the page's job)."""
    if not top.get("failure_type"):
        return "-"
    return f"{top['failure_type']} {100 * float(top.get('probability') or 0):.0f} %"


def _gpu_mem(used: float | None, total: float | None, pct: float | None, gpus: int) -> str:
    """All GPUs' memory, and the share in use of the fullest one (gpu_mem_used_pct)."""
    if used is None:
        return "-"
    share = f"fullest GPU {pct or 0:.0f}%" if gpus > 1 else f"{pct or 0:.0f}%"
    return f"{used:.1f} / {total or 0:.0f} GB ({share})"


def _fmt(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)


def _fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.0f} ms"


def _machine_figures(cp: Checkpoint) -> dict[str, Any] | None:
    """Return the machine's RAM and each watched filesystem's free space, in GB."""
    system = cp.system
    if system is None:
        return None
    return {
        "ram_available_gb": _div(system.memory_available_bytes, GB),
        "ram_total_gb": _div(system.memory_total_bytes, GB),
        "disks": [
            {"path": d.path, "free_gb": _div(d.free_bytes, GB), "total_gb": _div(d.total_bytes, GB),
             "used_pct": _round(d.used_pct)}
            for d in system.disks
        ],
    }  # fmt: skip


def _gpu_figures(cp: Checkpoint) -> list[dict[str, Any]] | None:
    """Return each GPU's memory, temperature, use and throttling on a host of several (which
    GPU is full or hot); None on a host of one, whose figures are the host's."""
    if len(cp.gpus) < 2:
        return None
    return [
        {
            "index": g.index,
            "used_gb": _div(g.memory_used_bytes, GB),
            "total_gb": _div(g.memory_total_bytes, GB),
            "temperature_c": _round(g.temperature_c, 0),
            "utilization_pct": _round(g.utilization_gpu_pct, 0),
            "throttled": [r for r in g.throttle_reasons if r in SLOWDOWN_REASONS],
            "lost": g.lost,
        }
        for g in cp.gpus
    ]


def _startup_figures(cp: Checkpoint) -> dict[str, Any] | None:
    """Return what vLLM logged about its last start (memory, KV cache, timings), if anything."""
    if cp.startup is None:
        return None
    keep = ("model_weights_gib", "weights_load_s", "kv_cache_gib", "kv_cache_tokens",
            "max_concurrency", "max_concurrency_tokens", "cuda_graph_gib", "init_engine_s",
            "vllm_version", "progress_pct")  # fmt: skip
    figures = {k: getattr(cp.startup, k) for k in keep if getattr(cp.startup, k) is not None}
    if cp.startup.phase is not None:
        figures["phase"] = cp.startup.phase.value
    return figures or None


def host_status(cp: Checkpoint) -> tuple[str, str]:
    """Return (status, reason) for a host whose agent sent this checkpoint."""
    if cp.lifecycle_state == LifecycleState.SERVING:
        return "up", ""
    reason = cp.lifecycle_detail or f"vLLM is {cp.lifecycle_state.value.replace('_', ' ')}"
    return "degraded", reason


def _div(value: float | None, by: float) -> float | None:
    return round(value / by, 3) if _plausible(value) else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if _plausible(value) else None


def _plausible(value: float | None) -> TypeGuard[float]:
    """Whether `value` is a figure at all: one beyond any host's (a broken exporter's, or a
    share of a denormal total that overflowed) is missing, as the analysis and the rollups
    take it, and never an infinity JSON cannot carry."""
    return value is not None and -MAX_READING <= value <= MAX_READING
