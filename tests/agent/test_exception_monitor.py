"""The exception monitor on real vLLM output: one event per error, not one per line."""

from __future__ import annotations

import random
import time
import tracemalloc
from collections.abc import Iterable
from itertools import zip_longest

import pytest

from agent.checkpoint import ErrorEvent
from agent.events import EventLog
from agent.exception_monitor import MAX_TRACEBACK_CHARS, ExceptionMonitor
from agent.loglines import LogLine
from tests.agent.test_exceptions import ALL_TEXTS, CorpusText, corpus_text

LINE_STEP_S = 0.001  # a process writes a traceback's lines within milliseconds


def lines_of(name: str) -> list[str]:
    return corpus_text(name).splitlines()


def feed(monitor: ExceptionMonitor, lines: Iterable[str], at: float = 100.0) -> float:
    """Feed `lines` a millisecond apart from `at`; return the time of the last one."""
    for text in lines:
        monitor.feed(LogLine(at=at, text=text))
        at += LINE_STEP_S
    return at - LINE_STEP_S


def interleave(*texts: list[str]) -> list[str]:
    return [line for group in zip_longest(*texts) for line in group if line is not None]


def test_it_makes_one_event_per_process_of_two_interleaved_tracebacks() -> None:
    engine = lines_of("kv_cache_exhausted-27508-gpt-oss-source-lines.txt")
    api = lines_of("engine_dead-41647-gemma4.txt")
    monitor = ExceptionMonitor(EventLog())
    last = feed(monitor, interleave(engine, api))
    events = {e.category: e for e in monitor.flush(last + 1)}
    assert set(events) == {"kv_cache_exhausted", "engine_dead"}
    assert events["kv_cache_exhausted"].traceback == "\n".join(engine)
    assert events["engine_dead"].traceback == "\n".join(api)
    assert events["engine_dead"].message.startswith("vllm.v1.engine.exceptions.EngineDeadError")


def test_it_splits_thirty_interleaved_lines_by_process() -> None:
    texts = [
        lines_of("kv_cache_exhausted-27508-gpt-oss-source-lines.txt"),  # (EngineCore_DP0 pid=..)
        lines_of("engine_dead-41647-gemma4.txt"),  # (APIServer pid=433)
        lines_of("cuda_oom-15105-topk-topp-sampler.txt"),  # (VllmWorker rank=1 pid=572)
        lines_of("nccl_error-6732-unhandled-cuda.txt"),  # (VllmWorkerProcess pid=760) and pid=762
    ]
    mixed = interleave(*texts)
    assert len(mixed) >= 30
    monitor = ExceptionMonitor(EventLog())
    events = monitor.flush(feed(monitor, mixed) + 1)
    assert sorted(e.category for e in events) == [
        "cuda_oom",
        "engine_dead",
        "kv_cache_exhausted",
        "nccl_error",
        "nccl_error",
    ]
    for event in events:
        tags = {line.split(")")[0] for line in event.traceback.splitlines()}
        assert len(tags) == 1, event.traceback


def test_it_keeps_a_real_chained_traceback_in_one_event() -> None:
    monitor = ExceptionMonitor(EventLog())
    text = lines_of("other-23176-flashinfer-ninja-build-chained.txt")
    [event] = monitor.flush(feed(monitor, text) + 1)
    assert event.traceback == "\n".join(text)
    assert event.fields["exception"] == "subprocess.CalledProcessError"


def test_it_keeps_a_wrapper_after_its_root_cause_in_one_event() -> None:
    # Assembled from two real texts under the root cause's prefix, the way vLLM logs a chain:
    # the ValueError of vllm#25837 caused the RuntimeError wrapper of vllm#29639.
    prefix = "(EngineCore_DP0 pid=17374) ERROR 09-28 15:47:24 [core.py:718] "
    cause = lines_of("cuda_oom-25837-free-memory-no-device-index.txt")[:3]
    wrapper = [
        line.split(") ", 1)[1]
        for line in lines_of("engine_dead-29639-init-failed-wrapper-alone.txt")
    ]
    chain = ["", "The above exception was the direct cause of the following exception:", ""]
    lines = cause + [
        prefix + line for line in [*chain, "Traceback (most recent call last):", *wrapper]
    ]
    monitor = ExceptionMonitor(EventLog())
    [event] = monitor.flush(feed(monitor, lines) + 1)
    assert event.category == "cuda_oom"
    assert event.message.startswith("ValueError: Free memory on device (3.22/4.0 GiB)")
    assert "Engine core initialization failed" in event.traceback
    assert event.fields["config_key"] == "gpu_memory_utilization"


def test_it_keeps_a_logged_message_with_its_traceback_and_apart_from_the_next_record() -> None:
    monitor = ExceptionMonitor(EventLog())
    events = monitor.flush(
        feed(monitor, lines_of("worker_timeout_or_hang-intel-llm-scaler-77.txt")) + 1
    )
    assert [(e.category, e.message) for e in events] == [
        ("worker_timeout_or_hang", "TimeoutError: RPC call to execute_model timed out."),
        ("engine_dead", "AsyncLLM output_handler failed."),
    ]
    assert events[1].traceback.count("\n") == 4  # the message, "Traceback ...", three lines


def test_it_joins_an_uvicorn_error_line_and_its_raw_traceback() -> None:
    monitor = ExceptionMonitor(EventLog())
    text = lines_of("other-7290-exception-in-asgi-application.txt")
    [event] = monitor.flush(feed(monitor, text) + 1)
    assert event.message == "Exception in ASGI application"
    assert event.traceback == "\n".join(text[1:])  # the INFO access-log line is not part of it


def test_it_counts_a_repeated_error_as_one_event() -> None:
    record = lines_of("tokenizer_or_request_error-orpheus-7-preprocessing-completion.txt")
    monitor = ExceptionMonitor(EventLog())
    for repeat in range(5):
        last = feed(monitor, record, at=100.0 + repeat)
    [event] = monitor.flush(last + 1)
    assert event.category == "tokenizer_or_request_error"
    assert event.count == 5
    assert event.first_seen_at == 100.0 + LINE_STEP_S  # the ERROR line after the WARNING
    assert event.last_seen_at == last
    assert "The following fields were present" not in event.traceback  # a WARNING, not the error


def test_it_counts_the_periodic_shm_message_once_per_interval_with_its_count() -> None:
    shm = lines_of("worker_timeout_or_hang-vllm-ascend-3717-shm-broadcast.txt")[1:]
    log = EventLog()
    monitor = ExceptionMonitor(log)
    for i, line in enumerate(shm):
        monitor.feed(LogLine(at=100.0 + 60 * i, text=line))
    [first] = monitor.flush(300.0)
    assert (first.category, first.count) == ("worker_timeout_or_hang", 3)
    monitor.feed(LogLine(at=301.0, text=shm[0]))
    [again] = monitor.flush(400.0)
    assert (again.signature, again.count) == (first.signature, 1)
    assert again.id == first.id + 1
    assert log.since(0).errors == [first, again]


def test_it_costs_one_event_for_a_flood_of_identical_lines() -> None:
    monitor = ExceptionMonitor(EventLog())
    lines = [
        f"(APIServer pid=1) ERROR 11-27 10:{i // 60 % 60:02d}:{i % 60:02d} [serving.py:120]"
        " Error in preprocessing prompt inputs"
        for i in range(100_000)
    ]
    tracemalloc.start()
    started = time.perf_counter()
    baseline = tracemalloc.get_traced_memory()[0]
    last = feed(monitor, lines)
    grown = tracemalloc.get_traced_memory()[1] - baseline
    tracemalloc.stop()
    assert time.perf_counter() - started < 20
    assert grown < 1_000_000
    [event] = monitor.flush(last + 1)
    assert (event.category, event.count) == ("tokenizer_or_request_error", 100_000)


def test_it_waits_for_a_traceback_to_end_before_closing_it() -> None:
    text = lines_of("other-23176-flashinfer-ninja-build-chained.txt")
    monitor = ExceptionMonitor(EventLog())
    at = feed(monitor, text[:5])
    assert monitor.flush(at + 0.1) == []
    at = feed(monitor, text[5:], at=at + 0.2)
    [event] = monitor.flush(at + 1)
    assert event.traceback == "\n".join(text)


def test_it_closes_a_traceback_cut_short_once_it_goes_quiet() -> None:
    monitor = ExceptionMonitor(EventLog(), quiet_s=2.0)
    at = feed(monitor, lines_of("engine_dead-18730-enginecore-failed-to-start.txt"))
    assert monitor.flush(at + 1.0) == []
    [event] = monitor.flush(at + 2.0)
    assert (event.category, event.message) == ("engine_dead", "EngineCore failed to start.")


def test_it_ignores_ordinary_lines_and_reports_the_failure_signals_of_reference_6() -> None:
    ordinary = [
        "(APIServer pid=5) INFO 11-27 10:00:00 [api_server.py:1] vLLM API server version 0.9.2",
        "Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:01<00:01]",
        "(EngineCore_DP0 pid=812) WARNING 11-27 10:00:03 [utils.py:9] Casting bfloat16 to float16.",
        "[rank0]:[W409 11:42:27.776885251 ProcessGroupNCCL.cpp:1250] Warning: WARNING: process"
        " group has NOT been destroyed before we destruct ProcessGroupNCCL.",
        "INFO:     Application startup complete.",
        "ERROR 06-15 13:57:57 [dump_input.py:79] Dumping scheduler output for model execution:",
        "ERROR 06-15 13:57:57 [dump_input.py:82] SchedulerStats(num_running_reqs=1,"
        " num_waiting_reqs=0, gpu_cache_usage=0.0006499203847528667)",
        '(APIServer pid=5) INFO:     127.0.0.1:5000 - "GET /health HTTP/1.1" 200 OK',
    ]
    monitor = ExceptionMonitor(EventLog())
    assert monitor.flush(feed(monitor, ordinary) + 1) == []
    preemption = lines_of("kv_cache_exhausted-546-preempted-swap.txt")
    shm = lines_of("worker_timeout_or_hang-51986-shm-broadcast-new-wording.txt")
    events = monitor.flush(feed(monitor, preemption + shm, at=200.0) + 1)
    assert [e.category for e in events] == ["kv_cache_exhausted", "worker_timeout_or_hang"]


def test_it_reports_lines_without_a_level_that_are_errors_on_their_own() -> None:
    lines = [
        "Killed",
        "[ 1843.308145] NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus",
        *lines_of("nccl_error-3071-ray-watchdog-1800000.txt"),
    ]
    monitor = ExceptionMonitor(EventLog())
    at = 100.0
    for line in lines:  # from three sources, a second apart
        monitor.feed(LogLine(at=at, text=line, stream="stderr"))
        at += 1.0
    events = monitor.flush(at)
    assert [(e.category, e.fields.get("xid")) for e in events] == [
        ("system_resource", None),
        ("cuda_illegal_access_or_xid", 79),
        ("nccl_error", None),
    ]
    assert events[2].fields["timeout_ms"] == 1_800_000


def test_it_reads_docker_compose_prefixed_lines() -> None:
    monitor = ExceptionMonitor(EventLog())
    text = lines_of("kv_cache_exhausted-10439-v0-no-cache-blocks.txt")
    [event] = monitor.flush(feed(monitor, text) + 1)
    assert event.category == "kv_cache_exhausted"
    assert event.message.startswith("ValueError: No available memory for the cache blocks.")


def test_it_bounds_the_traceback_of_a_huge_error_and_keeps_its_last_line() -> None:
    frame = ['  File "/usr/lib/python3.12/site-packages/vllm/x.py", line 1, in f', "    f()"]
    oom = lines_of("cuda_oom-20581-llama4-startup.txt")[0].split("] ", 1)[1]
    lines = ["Traceback (most recent call last):", *frame * 10_000, oom]
    monitor = ExceptionMonitor(EventLog())
    [event] = monitor.flush(feed(monitor, lines) + 1)
    assert event.category == "cuda_oom"
    assert event.message.startswith("torch.OutOfMemoryError: CUDA out of memory.")
    assert len(event.traceback) <= MAX_TRACEBACK_CHARS + 10
    assert event.traceback.endswith(oom[-40:])


def test_it_numbers_its_events_in_the_event_log() -> None:
    log = EventLog()
    monitor = ExceptionMonitor(log)
    at = feed(monitor, lines_of("network_or_port-11617-get-open-port.txt"))
    at = feed(monitor, lines_of("system_resource-1771-bus-error.txt"), at=at + 1)
    events: list[ErrorEvent] = monitor.flush(at + 1)
    assert [e.id for e in events] == [1, 2]
    assert [e.category for e in events] == ["network_or_port", "system_resource"]
    assert log.since(1).errors == events[1:]


def test_it_never_raises_on_junk_and_bounds_what_it_keeps() -> None:
    rng = random.Random(11)
    junk = [
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).decode("latin-1")
        for _ in range(2_000)
    ]
    junk += ["(" * 10_000, "ERROR " + "x" * 200_000, "Traceback (most recent call last):" * 50]
    monitor = ExceptionMonitor(EventLog())
    last = feed(monitor, junk)
    events = monitor.flush(last + 1)
    assert all(len(e.traceback) <= MAX_TRACEBACK_CHARS + 10 for e in events)
    assert all(len(e.message) <= 400 for e in events)


def test_it_keeps_the_lines_of_a_multi_line_exception_message_together() -> None:
    text = lines_of("model_load_error-private-gpt-1985-oserror-gated.txt")
    monitor = ExceptionMonitor(EventLog())
    [event] = monitor.flush(feed(monitor, text) + 1)
    assert event.traceback == "\n".join(text)
    assert event.fields["repo"] == "mistralai/Mistral-7B-Instruct-v0.2"


def test_it_does_not_append_unrelated_raw_lines_to_a_raw_error_line() -> None:
    lines = ["Killed", "Loading safetensors checkpoint shards:  50% Completed | 2/4", "Killed"]
    monitor = ExceptionMonitor(EventLog())
    [event] = monitor.flush(feed(monitor, lines) + 1)
    assert (event.category, event.count, event.traceback) == ("system_resource", 2, "Killed")


@pytest.mark.parametrize("sample", ALL_TEXTS, ids=[s.name for s in ALL_TEXTS])
def test_it_reports_every_corpus_text_fed_line_by_line_under_its_category(
    sample: CorpusText,
) -> None:
    monitor = ExceptionMonitor(EventLog())
    events = monitor.flush(feed(monitor, sample.text.splitlines()) + 1)
    assert sample.category in [e.category for e in events]
