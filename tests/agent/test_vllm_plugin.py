"""The vLLM stat-logger plugin, inside a stand-in vLLM (vLLM is the edge: it cannot be installed
here), with stats shaped like vLLM's SchedulerStats and IterationStats (reference §3)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from agent import vllm_plugin
from agent.vllm_plugin import DEFAULT_STATS_PORT, PORT_ENV, StepReporter, stats_port

ROOT = Path(__file__).resolve().parents[2]


class StatLoggerBase(ABC):
    """vLLM's vllm/v1/metrics/loggers.py StatLoggerBase, as far as a plugin sees it."""

    @abstractmethod
    def __init__(self, vllm_config: Any, engine_index: int = 0) -> None: ...

    @abstractmethod
    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None: ...

    @abstractmethod
    def log_engine_initialized(self) -> None: ...

    # Not abstract in vLLM either: a logger may leave them out.
    def log(self) -> None:  # noqa: B027
        pass

    def record_sleep_state(self, is_awake: int, level: int) -> None:  # noqa: B027
        pass


@pytest.fixture
def stand_in_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """Put `vllm.v1.metrics.loggers` with StatLoggerBase into sys.modules for one test."""
    names = ("vllm", "vllm.v1", "vllm.v1.metrics", "vllm.v1.metrics.loggers")
    for name in names:
        monkeypatch.setitem(sys.modules, name, ModuleType(name))
    sys.modules["vllm.v1.metrics.loggers"].StatLoggerBase = StatLoggerBase  # type: ignore[attr-defined]
    # The class is built once per process, against whichever vLLM is there.
    monkeypatch.delitem(vllm_plugin.__dict__, "SentinelStatLogger", raising=False)
    yield StatLoggerBase
    vllm_plugin.__dict__.pop("SentinelStatLogger", None)


@pytest.fixture
def agent_socket() -> Iterator[socket.socket]:
    """A UDP socket standing where the agent listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        yield sock


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return _port(sock)


def scheduler_stats(running: int, waiting: int = 0, kv: float = 0.4) -> SimpleNamespace:
    return SimpleNamespace(
        num_running_reqs=running,
        num_waiting_reqs=waiting,
        num_skipped_waiting_reqs=0,
        step_counter=0,
        current_wave=0,
        kv_cache_usage=kv,
        prefix_cache_stats=SimpleNamespace(queries=0, hits=0),
        spec_decoding_stats=None,
        cudagraph_stats=None,
        perf_stats=None,
    )


def iteration_stats(
    generated: int, computed_prompt: int = 0, preempted: int = 0
) -> SimpleNamespace:
    return SimpleNamespace(
        iteration_timestamp=time.time(),
        num_generation_tokens=generated,
        prompt_token_stats=SimpleNamespace(
            computed=computed_prompt, local_cache_hit=0, external_kv_transfer=0, total=0
        ),
        num_preempted_reqs=preempted,
        finished_requests=[],
        time_to_first_tokens_iter=[],
        inter_token_latencies_iter=[],
    )


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_it_is_the_vllm_stat_logger_its_entry_point_names(stand_in_vllm: type) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    plugins = project["project"]["entry-points"]["vllm.stat_logger_plugins"]
    assert plugins == {"sentinel": "agent.vllm_plugin:SentinelStatLogger"}

    group = "vllm.stat_logger_plugins"
    cls = EntryPoint(name="sentinel", value=plugins["sentinel"], group=group).load()

    assert isinstance(cls, type) and issubclass(cls, stand_in_vllm)
    logger = cls(SimpleNamespace(), engine_index=1)  # not abstract: vLLM can build it
    assert logger.engine_index == 1
    logger.log_engine_initialized()
    logger.reporter.close()


def test_it_imports_without_vllm_and_needs_vllm_only_for_the_class() -> None:
    script = (
        "import sys, agent.vllm_plugin as p\n"
        "assert 'vllm' not in sys.modules and p.DEFAULT_STATS_PORT\n"
        "try:\n"
        "    p.SentinelStatLogger\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc.name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "vllm"


def test_it_sends_each_window_of_steps_as_one_datagram(
    stand_in_vllm: type, agent_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PORT_ENV, str(_port(agent_socket)))
    logger = vllm_plugin.SentinelStatLogger(SimpleNamespace(), engine_index=0)
    clock = Clock()
    logger.reporter._clock = clock
    for step, gap_s in enumerate([0.0, 0.02, 0.05, 0.04]):
        clock.t += gap_s
        logger.record(
            scheduler_stats=scheduler_stats(
                running=12 + step, waiting=3 - step, kv=0.5 + step / 10
            ),
            iteration_stats=iteration_stats(generated=12, computed_prompt=500 if step == 0 else 0),
            mm_cache_stats=None,
            engine_idx=0,
        )

    datagram = json.loads(agent_socket.recv(4096))
    assert datagram == {
        "v": 1,
        "engine": 0,
        "steps": 4,
        "first_t": 1000.0,
        "last_t": pytest.approx(1000.11),
        "gap_max_s": pytest.approx(0.05),
        "tokens": 548,
        "preempted": 0,
        "kv_max_pct": pytest.approx(80.0),
        "running_max": 15,
        "waiting_max": 3,
        "running_last": 15,
    }
    assert logger.reporter.sent == 1
    logger.reporter.close()


def test_it_sends_at_once_when_the_engine_goes_idle(agent_socket: socket.socket) -> None:
    reporter = StepReporter(_port(agent_socket), clock=Clock())
    reporter.record(scheduler_stats(running=2), iteration_stats(generated=2))
    reporter.record(scheduler_stats(running=0), iteration_stats(generated=1, preempted=1))

    datagram = json.loads(agent_socket.recv(4096))
    assert (datagram["steps"], datagram["running_last"], datagram["preempted"]) == (2, 0, 1)
    reporter.close()


def test_it_flushes_what_a_quiet_engine_left_when_vllm_logs(
    stand_in_vllm: type, agent_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PORT_ENV, str(_port(agent_socket)))
    logger = vllm_plugin.SentinelStatLogger(SimpleNamespace())
    logger.record(scheduler_stats(running=5), iteration_stats(generated=5))
    logger.log()

    assert json.loads(agent_socket.recv(4096))["steps"] == 1
    logger.reporter.close()


def test_it_never_blocks_with_no_agent_listening() -> None:
    reporter = StepReporter(_closed_port(), flush_interval_s=0.0)
    assert reporter.sock is not None and reporter.sock.getblocking() is False
    started = time.perf_counter()
    for _ in range(5000):
        reporter.record(scheduler_stats(running=8), iteration_stats(generated=8))
    elapsed_s = time.perf_counter() - started

    assert reporter.sent + reporter.dropped == 5000
    assert elapsed_s < 2.0  # ~20 us a step on a slow shared machine; blocking would hang
    reporter.close()


def test_it_never_blocks_when_the_agent_does_not_read() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        stuck.bind(("127.0.0.1", 0))
        reporter = StepReporter(_port(stuck), flush_interval_s=0.0)
        assert reporter.sock is not None
        reporter.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024)
        started = time.perf_counter()
        for _ in range(5000):
            reporter.record(scheduler_stats(running=8), iteration_stats(generated=8))

        assert time.perf_counter() - started < 2.0
        assert reporter.sent + reporter.dropped == 5000
        reporter.close()


class _FullBuffer:
    """A socket whose send buffer is full: what a non-blocking sendto says then."""

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    def close(self) -> None:
        pass


def test_it_drops_a_window_when_the_send_buffer_is_full() -> None:
    reporter = StepReporter(DEFAULT_STATS_PORT, flush_interval_s=0.0)
    assert reporter.sock is not None
    reporter.sock.close()
    reporter.sock = _FullBuffer()  # type: ignore[assignment]
    reporter.record(scheduler_stats(running=1), iteration_stats(generated=1))
    reporter.record(scheduler_stats(running=1), iteration_stats(generated=1))

    assert (reporter.sent, reporter.dropped) == (0, 2)


def test_it_survives_stats_it_does_not_understand(agent_socket: socket.socket) -> None:
    reporter = StepReporter(_port(agent_socket), flush_interval_s=0.0)
    reporter.record(None, None)  # no stats at all: not a step
    reporter.record(SimpleNamespace(num_running_reqs="many"), None)
    reporter.record(SimpleNamespace(), SimpleNamespace(num_generation_tokens=object()))
    # A 0.8-era SchedulerStats: gpu_cache_usage, no kv_cache_usage; no prompt_token_stats.
    old = SimpleNamespace(num_running_reqs=3, num_waiting_reqs=0, gpu_cache_usage=0.25)
    reporter.record(old, SimpleNamespace(num_generation_tokens=3, num_prompt_tokens=40))

    assert reporter.errors == 2
    datagram = json.loads(agent_socket.recv(4096))
    assert (datagram["kv_max_pct"], datagram["tokens"]) == (25.0, 43)
    reporter.close()


def test_it_reads_the_agent_port_from_the_environment() -> None:
    assert stats_port({}) == DEFAULT_STATS_PORT
    assert stats_port({PORT_ENV: "9400"}) == 9400
    for bad in ("agent", "0", "70000", "-1"):
        with pytest.raises(ValueError, match=PORT_ENV):
            stats_port({PORT_ENV: bad})


def test_it_stays_off_rather_than_stop_vllm_on_a_bad_port(
    stand_in_vllm: type, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(PORT_ENV, "not-a-port")
    logger = vllm_plugin.SentinelStatLogger(SimpleNamespace())
    logger.record(scheduler_stats(running=1), iteration_stats(generated=1))

    assert logger.reporter.sock is None and logger.reporter.sent == 0
    assert "Sentinel step stats are off" in caplog.text
