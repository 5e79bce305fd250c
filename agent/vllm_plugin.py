"""An optional vLLM stat-logger plugin: per-step engine figures to the Sentinel agent, over UDP.

vLLM loads `SentinelStatLogger` from the `vllm.stat_logger_plugins` entry point into its API
server (reference §3) and calls `record()` for every engine step, inside its asyncio output
loop. So `record()` only folds the step into a small window; every FLUSH_INTERVAL_S, and at
once when the engine goes idle, one datagram goes to the agent on 127.0.0.1 from a
non-blocking UDP socket. A datagram that cannot leave at once (a full buffer, a broken
network stack) is dropped and counted, and with no agent listening it simply goes nowhere:
nothing waits and nothing raises into vLLM.

vLLM is imported only when vLLM looks the class up (the module's `__getattr__`), so the
agent imports this module, for its constants, where vLLM is not installed.

The agent's port: env SENTINEL_AGENT_STATS_PORT, default DEFAULT_STATS_PORT (UDP).

A datagram is one JSON object (DATAGRAM_VERSION 1); times are time.monotonic() seconds, which
the agent shares, being on the same host:
    v             DATAGRAM_VERSION
    engine        the engine index (data-parallel rank)
    steps         engine steps in the window (>= 1)
    first_t       when the window's first step was recorded
    last_t        when its last step was recorded
    gap_max_s     the longest gap between two consecutive steps inside the window
    tokens        prompt tokens computed plus tokens generated, over the window
    preempted     requests preempted, over the window
    kv_max_pct    KV-cache usage, the highest in the window, 0-100 (null if not reported)
    running_max   requests running, the most in the window (null if not reported)
    waiting_max   requests waiting, the most in the window (null if not reported)
    running_last  requests running after the last step: 0 means the engine went idle
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_STATS_PORT = 9301
PORT_ENV = "SENTINEL_AGENT_STATS_PORT"
AGENT_HOST = "127.0.0.1"
DATAGRAM_VERSION = 1
FLUSH_INTERVAL_S = 0.1  # ~10 datagrams a second per engine while it works


def stats_port(environ: Mapping[str, str] = os.environ) -> int:
    """Return the agent's step-stats port from SENTINEL_AGENT_STATS_PORT, or the default."""
    value = environ.get(PORT_ENV, "").strip()
    if not value:
        return DEFAULT_STATS_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{PORT_ENV}={value!r}: use a port number from 1 to 65535")
    return int(value)


@dataclass(slots=True)
class _Window:
    engine: int
    first_t: float
    last_t: float
    steps: int = 0
    gap_max_s: float = 0.0
    tokens: int = 0
    preempted: int = 0
    kv_max_pct: float | None = None
    running_max: int | None = None
    waiting_max: int | None = None
    running_last: int | None = None

    def datagram(self) -> bytes:
        return json.dumps({"v": DATAGRAM_VERSION, **asdict(self)}, separators=(",", ":")).encode()


class StepReporter:
    """Folds engine steps into windows and sends each as one datagram; never blocks."""

    def __init__(
        self,
        port: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.sent = 0
        self.dropped = 0  # datagrams that could not leave at once
        self.errors = 0  # steps whose stats could not be read
        self._address = (AGENT_HOST, port or 0)
        self._clock = clock
        self._flush_interval_s = flush_interval_s
        self._windows: dict[int, _Window] = {}
        self.sock: socket.socket | None = _open_socket() if port else None

    def record(self, scheduler_stats: Any, iteration_stats: Any, engine: int = 0) -> None:
        """Fold one engine step in; called from vLLM's event loop, so never raise or wait."""
        if self.sock is None or (scheduler_stats is None and iteration_stats is None):
            return
        try:
            self._record(scheduler_stats, iteration_stats, engine)
        except Exception:
            # Stats shapes change between vLLM versions: lose a step, never vLLM's loop.
            self.errors += 1

    def flush(self) -> None:
        """Send every open window now."""
        for engine in list(self._windows):
            self._send(self._windows.pop(engine))

    def close(self) -> None:
        self.flush()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _record(self, scheduler_stats: Any, iteration_stats: Any, engine: int) -> None:
        now = self._clock()
        window = self._windows.get(engine)
        if window is None:
            window = self._windows[engine] = _Window(engine, first_t=now, last_t=now)
        elif window.steps:
            window.gap_max_s = max(window.gap_max_s, now - window.last_t)
        window.steps += 1
        window.last_t = now
        if iteration_stats is not None:
            _fold_iteration(window, iteration_stats)
        if scheduler_stats is not None:
            _fold_scheduler(window, scheduler_stats)
        if window.running_last == 0 or now - window.first_t >= self._flush_interval_s:
            self._send(self._windows.pop(engine))

    def _send(self, window: _Window) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(window.datagram(), self._address)
            self.sent += 1
        except OSError:
            # A full buffer (BlockingIOError), a refused port: the agent loses one window.
            self.dropped += 1


def _open_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def _fold_iteration(window: _Window, stats: Any) -> None:
    generated = int(getattr(stats, "num_generation_tokens", 0) or 0)
    # June-2026 splits prompt tokens by source; the computed ones are the work done.
    prompt_stats = getattr(stats, "prompt_token_stats", None)
    computed = getattr(prompt_stats, "computed", None)
    prompt = computed if computed is not None else getattr(stats, "num_prompt_tokens", 0)
    window.tokens += generated + int(prompt or 0)
    window.preempted += int(getattr(stats, "num_preempted_reqs", 0) or 0)


def _fold_scheduler(window: _Window, stats: Any) -> None:
    running = int(stats.num_running_reqs)
    waiting = int(stats.num_waiting_reqs)
    usage = getattr(stats, "kv_cache_usage", None)
    if usage is None:
        usage = getattr(stats, "gpu_cache_usage", None)  # before 0.9
    window.running_last = running
    window.running_max = max(running, window.running_max or 0)
    window.waiting_max = max(waiting, window.waiting_max or 0)
    if usage is not None:
        pct = min(100.0, max(0.0, 100.0 * float(usage)))
        window.kv_max_pct = max(pct, window.kv_max_pct or 0.0)


class _SentinelStatLoggerMethods:
    """SentinelStatLogger's methods; the class also derives from vLLM's StatLoggerBase."""

    def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
        self.engine_index = engine_index
        try:
            port: int | None = stats_port()
        except ValueError as exc:
            # A monitoring plugin must never stop vLLM from starting: report, and stay off.
            log.warning("Sentinel step stats are off: %s", exc)
            port = None
        self.reporter = StepReporter(port)

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int | None = None,
        **later_additions: Any,
    ) -> None:
        engine = self.engine_index if engine_idx is None else engine_idx
        self.reporter.record(scheduler_stats, iteration_stats, engine)

    def log(self) -> None:
        # Every VLLM_LOG_STATS_INTERVAL: whatever a quiet engine left in a window goes out.
        self.reporter.flush()

    def log_engine_initialized(self) -> None:
        """Nothing to report: the agent reads the startup figures from vLLM's log."""

    def record_sleep_state(self, is_awake: Any = None, level: Any = None) -> None:
        self.reporter.flush()


def _stat_logger_class() -> type:
    from vllm.v1.metrics.loggers import StatLoggerBase

    # Our methods first: they implement StatLoggerBase's abstract ones.
    return types.new_class("SentinelStatLogger", (_SentinelStatLoggerMethods, StatLoggerBase))


def __getattr__(name: str) -> Any:
    # Built on first lookup (vLLM's entry-point loader): importing vLLM is for vLLM's process.
    if name == "SentinelStatLogger":
        cls = _stat_logger_class()
        cls.__module__ = __name__
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
