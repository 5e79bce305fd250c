"""The counters and histograms of one vLLM process: everything /metrics exposes.

A restart builds a new `EngineStats`, so counters start again from zero and `_created`
moves, as on a real server.
"""

from __future__ import annotations

from simulator.histogram import Histogram, one_two_five
from simulator.vllm_metrics import (
    FINISHED_REASONS,
    HISTOGRAMS,
    HTTP_DURATION_BUCKETS,
    HTTP_HIGHR_BUCKETS,
    PROMPT_SOURCES,
)


class EngineStats:
    """Counters of the engine (vllm:*), created when the engine finished starting."""

    def __init__(self, max_model_len: int, created_at: float) -> None:
        self.created_at = created_at
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.preemptions = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prompt_by_source = dict.fromkeys(PROMPT_SOURCES, 0)
        self.finished = dict.fromkeys(FINISHED_REASONS, 0)
        token_bounds = one_two_five(max_model_len)
        self.hist = {
            name: Histogram(bounds if isinstance(bounds, tuple) else token_bounds)
            for name, (_, bounds) in HISTOGRAMS.items()
        }

    @property
    def engine_steps(self) -> int:
        return self.hist["vllm:iteration_tokens_total"].count


class HttpStats:
    """What prometheus-fastapi-instrumentator records; children appear on first use."""

    def __init__(self, created_at: float) -> None:
        self.created_at = created_at
        self.requests: dict[tuple[str, str, str], list[float]] = {}  # -> [count, created]
        self.request_size: dict[str, list[float]] = {}  # handler -> [count, sum, created]
        self.response_size: dict[str, list[float]] = {}
        self.duration: dict[tuple[str, str], tuple[Histogram, float]] = {}
        self.highr = Histogram(HTTP_HIGHR_BUCKETS)

    def observe(
        self,
        handler: str,
        method: str,
        status: int,
        duration_s: float,
        sizes: tuple[int, int],
        now: float,
        n: int = 1,
    ) -> None:
        """Record `n` equal requests; `sizes` are the request and response Content-Lengths."""
        key = (handler, method, f"{status // 100}xx")
        self.requests.setdefault(key, [0.0, now])[0] += n
        for table, size in ((self.request_size, sizes[0]), (self.response_size, sizes[1])):
            entry = table.setdefault(handler, [0.0, 0.0, now])
            entry[0] += n
            entry[1] += size * n
        hist = self.duration.get((handler, method))
        if hist is None:
            hist = self.duration[(handler, method)] = (Histogram(HTTP_DURATION_BUCKETS), now)
        hist[0].observe(duration_s, n)
        self.highr.observe(duration_s, n)
