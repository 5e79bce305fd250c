"""Scrape one vLLM server: `GET /metrics` and `GET /health`, concurrently, with one timeout.

`collect()` returns a VllmProbe: the Vllm section of the checkpoint (None when the server
could not be reached at all), why any part is missing, and whether the failure was a refused
connection or a timeout (the lifecycle tells a starting server from a wedged one by that).
It keeps the previous reading to derive rates and latency, and never raises for HTTP or
parsing failures.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from agent.checkpoint import Health, Vllm
from agent.clock import SYSTEM_CLOCK, Clock
from agent.collectors.exposition import ExpositionParser
from agent.collectors.vllm_delta import compare
from agent.collectors.vllm_metrics import MetricsReading, read_metrics, wanted_sample_names

MAX_METRICS_BYTES = 8 * 1024 * 1024
# Loopback scrapes: compression would cost CPU on both sides for nothing.
HEADERS = {"Accept-Encoding": "identity"}


@dataclass(kw_only=True, slots=True)
class VllmProbe:
    vllm: Vllm | None
    missing: dict[str, str] = field(default_factory=dict)
    refused: bool = False  # nothing listens: vLLM is down or still starting
    timed_out: bool = False  # something listens but did not answer in time


@dataclass(slots=True)
class _Answer:
    status: int | None = None
    body: bytes = b""
    latency_s: float | None = None
    error: str | None = None
    refused: bool = False
    timed_out: bool = False


class VllmCollector:
    def __init__(self, base_url: str, *, timeout_s: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.base_url = base_url.rstrip("/")
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._parser = ExpositionParser(wanted_sample_names())
        self._previous: tuple[MetricsReading, float] | None = None

    async def collect(self) -> VllmProbe:
        """Return this scrape's probe; the clock is read when /metrics answers."""
        health, metrics = await asyncio.gather(self._get("/health"), self._get("/metrics"))
        if health.status is None and metrics.status is None:
            # The previous reading is kept: if vLLM restarted meanwhile, the next scrape sees
            # its counters back at zero and says `restarted`.
            return _unreachable(health, metrics, self.base_url)
        vllm = Vllm(url=self.base_url, health=_health(health))
        missing: dict[str, str] = {}
        reason = self._fill_metrics(vllm, metrics)
        if reason:
            missing["vllm_metrics"] = reason
        return VllmProbe(vllm=vllm, missing=missing)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _fill_metrics(self, vllm: Vllm, answer: _Answer) -> str | None:
        """Fill `vllm` from the /metrics answer; return why it could not be, if so."""
        if answer.status != 200:
            return answer.error or f"/metrics answered HTTP {answer.status}"
        now = self._clock.monotonic()
        try:
            reading = read_metrics(self._parser.parse(answer.body.decode("utf-8", "replace")))
        except Exception as exc:  # the parser raises several types on malformed text
            return f"unparseable /metrics: {exc}"
        if not reading.has_engine_metrics:
            return "no vllm:* metrics in /metrics (is vLLM running with --disable-log-stats?)"
        previous, self._previous = self._previous, (reading, now)
        before, interval_s = (None, 0.0) if previous is None else (previous[0], now - previous[1])
        _apply(vllm, reading, before, interval_s)
        return None

    async def _get(self, path: str) -> _Answer:
        # The answer's latency is real work on this machine, whatever clock the agent keeps.
        started = time.perf_counter()
        try:
            async with self._client().get(self.base_url + path, headers=HEADERS) as resp:
                body = await _read_capped(resp, MAX_METRICS_BYTES)
                return _Answer(resp.status, body, time.perf_counter() - started)
        except TimeoutError:
            return _Answer(error=f"no answer within {self._timeout_s:g} s", timed_out=True)
        except aiohttp.ClientConnectorError as exc:
            return _Answer(error=f"cannot connect: {exc.os_error or exc}", refused=True)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return _Answer(error=f"{type(exc).__name__}: {exc}")

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession must be made inside the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=4)
            )
        return self._session


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise ValueError(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _health(answer: _Answer) -> Health:
    if answer.status is None:
        return Health(ok=False, error=answer.error)
    error = None
    if answer.status != 200:
        # vLLM answers 503 both when the engine is dead (empty body) and while elastic EP
        # scales (a JSON error); the body tells them apart.
        error = answer.body[:200].decode("utf-8", "replace") or f"HTTP {answer.status}"
    return Health(
        ok=answer.status == 200, status_code=answer.status, latency_s=answer.latency_s, error=error
    )


def _unreachable(health: _Answer, metrics: _Answer, url: str) -> VllmProbe:
    reason = health.error or metrics.error or "no answer"
    return VllmProbe(
        vllm=None,
        missing={"vllm": f"{url}: {reason}"},
        refused=health.refused or metrics.refused,
        timed_out=not (health.refused or metrics.refused)
        and (health.timed_out or metrics.timed_out),
    )


def _apply(vllm: Vllm, reading: MetricsReading, before: MetricsReading | None, gap: float) -> None:
    interval = compare(before, reading, gap)
    vllm.model_name = reading.model_name
    vllm.engines = reading.engines
    vllm.requests_running = reading.requests_running
    vllm.requests_waiting = reading.requests_waiting
    vllm.requests_waiting_capacity = reading.requests_waiting_capacity
    vllm.requests_waiting_deferred = reading.requests_waiting_deferred
    vllm.kv_cache_usage_pct = reading.kv_cache_usage_pct
    vllm.sleep_state = reading.sleep_state
    vllm.cache = reading.cache
    vllm.totals = dict(reading.totals)
    vllm.rates = interval.rates
    vllm.latency = interval.latency
    vllm.forward_progress = interval.forward_progress
    vllm.restarted = interval.restarted
    vllm.interval_s = gap if before is not None else None
    vllm.api_server = reading.api_server
    vllm.samples = reading.sample_lines
