"""The lifecycle state tracker, fed recorded vLLM logs, classified errors and probes."""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path

import pytest

from agent.checkpoint import ErrorEvent, Gpu, Health, Rates, Startup, Transition, Vllm
from agent.collectors.gpu import GpuCollector
from agent.collectors.vllm import VllmCollector, VllmProbe
from agent.events import EventLog
from agent.exception_monitor import ExceptionMonitor
from agent.lifecycle import LifecycleState as S
from agent.lifecycle_lines import read_line
from agent.loglines import LogLine
from agent.tracker import StateTracker
from simulator.fleet import Fleet, FleetConfig, run_fleet

LOGS = Path(__file__).resolve().parent.parent / "data" / "vllm_logs"
_STAMP = re.compile(r"\b(\d\d-\d\d \d\d:\d\d:\d\d)\b")
REFUSED = VllmProbe(
    vllm=None, missing={"vllm": "http://127.0.0.1:8000: cannot connect"}, refused=True
)
NO_GPUS: list[Gpu] = []


def stamp(text: str, year: int = 2026) -> float:
    """Return the epoch time of a vLLM log stamp like "06-15 06:00:48" (UTC)."""
    return float(calendar.timegm(time.strptime(f"{year}-{text}", "%Y-%m-%d %H:%M:%S")))


def replay(name: str, year: int = 2026) -> list[LogLine]:
    """Return a recorded log's lines, each read at its stamp (unstamped ones: the last stamp)."""
    lines, at = [], 0.0
    # Bytes, not text mode, and not splitlines(): a tqdm line holds carriage returns.
    for text in (LOGS / name).read_bytes().decode("utf-8").split("\n"):
        if found := _STAMP.search(text):
            at = stamp(found[1], year)
        if text:
            lines.append(LogLine(at=at, text=text))
    return lines


def feed(tracker: StateTracker, lines: list[LogLine]) -> None:
    for line in lines:
        tracker.feed_log(line)


def transitions(events: EventLog) -> list[Transition]:
    return events.since(0).transitions


def states(events: EventLog) -> list[S]:
    return [t.to_state for t in transitions(events)]


def probe(
    progress: bool | None = True,
    running: float = 12,
    interval_s: float = 5.0,
    status: int | None = 200,
    error: str | None = None,
    **fields: object,
) -> VllmProbe:
    vllm = Vllm(
        url="http://127.0.0.1:8000",
        health=Health(ok=status == 200, status_code=status, error=error),
        requests_running=running,
        requests_waiting=0,
        forward_progress=progress,
        interval_s=interval_s,
    )
    for name, value in fields.items():
        setattr(vllm, name, value)
    return VllmProbe(vllm=vllm)


def update(
    tracker: StateTracker,
    p: VllmProbe,
    now: float,
    alive: bool | None = True,
    gpus: list[Gpu] = NO_GPUS,
) -> tuple[S, str]:
    return tracker.update(p, process_alive=alive, gpus=gpus, now_mono=now, now_epoch=now)


def error(category: str, message: str, at: float) -> ErrorEvent:
    return ErrorEvent(category=category, message=message, first_seen_at=at, last_seen_at=at)


def serving_tracker(events: EventLog, stall_after_s: float = 15.0) -> StateTracker:
    tracker = StateTracker(events, stall_after_s=stall_after_s)
    feed(tracker, replay("startup-2026-06.log"))
    assert tracker.state is S.SERVING
    return tracker


STARTUP_PHASES = [
    S.INITIALIZING,
    S.LOADING_WEIGHTS,
    S.PROFILING_MEMORY,
    S.ALLOCATING_KV_CACHE,
    S.CAPTURING_CUDA_GRAPHS,
    S.STARTING_API_SERVER,
    S.SERVING,
]

# ---------------------------------------------------------------- startup


def test_it_follows_every_startup_phase_of_a_june_2026_log_in_order() -> None:
    events = EventLog()
    tracker = StateTracker(events)
    feed(tracker, replay("startup-2026-06.log"))

    moves = transitions(events)
    assert [t.to_state for t in moves] == STARTUP_PHASES
    assert moves[0].from_state is S.UNKNOWN
    assert "vLLM server version 0.24.0" in moves[0].trigger
    assert moves[1].trigger.endswith("Starting to load model meta-llama/Llama-3.1-8B-Instruct...")
    assert "Model loading took 14.99 GiB" in moves[2].trigger
    assert "Available KV cache memory" in moves[3].trigger
    assert "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):   0%" in moves[4].trigger
    assert "init engine" in moves[5].trigger
    assert moves[6].trigger == "(APIServer pid=2012) INFO:     Application startup complete."
    # Stamped when it happened: the read time of the line.
    assert [t.at for t in moves] == [
        stamp(s)
        for s in (
            "06-15 06:00:00",
            "06-15 06:00:08",
            "06-15 06:00:14",
            "06-15 06:00:40",
            "06-15 06:00:40",
            "06-15 06:00:47",
            "06-15 06:00:48",
        )
    ]


def test_it_reads_the_startup_figures_of_a_june_2026_log() -> None:
    tracker = StateTracker(EventLog())
    feed(tracker, replay("startup-2026-06.log"))

    assert tracker.startup == Startup(
        phase=None,
        progress_pct=None,
        model_weights_gib=14.99,
        weights_load_s=5.312684,
        kv_cache_gib=54.39,
        kv_cache_tokens=445_632,
        max_concurrency=13.6,
        max_concurrency_tokens=32_768,
        cuda_graph_gib=0.61,
        cuda_graph_s=7.0,
        init_engine_s=33.12,
        started_at=stamp("06-15 06:00:00"),
        serving_at=stamp("06-15 06:00:48"),
        vllm_version="0.24.0",
    )


def test_it_reports_the_progress_of_weight_loading_and_graph_capture() -> None:
    tracker = StateTracker(EventLog())
    seen: list[tuple[S | None, float]] = []
    for line in replay("startup-2026-06.log"):
        tracker.feed_log(line)
        startup = tracker.startup
        if "%" in line.text and startup and startup.progress_pct is not None:  # a tqdm bar
            seen.append((startup.phase, round(startup.progress_pct, 1)))

    loading = [pct for phase, pct in seen if phase is S.LOADING_WEIGHTS]
    capturing = [pct for phase, pct in seen if phase is S.CAPTURING_CUDA_GRAPHS]
    assert loading == [0.0, 25.0, 50.0, 75.0, 100.0, 100.0]
    assert capturing == [0.0, 50.7, 100.0, 0.0, 48.6, 100.0]
    assert {phase for phase, _ in seen} == {S.LOADING_WEIGHTS, S.CAPTURING_CUDA_GRAPHS}


def test_it_follows_an_older_v0_8_startup_log() -> None:
    events = EventLog()
    tracker = StateTracker(events)
    progress = []
    for line in replay("startup-v0.8.log", year=2025):
        tracker.feed_log(line)
        startup = tracker.startup
        if startup and startup.phase is S.CAPTURING_CUDA_GRAPHS:
            progress.append(startup.progress_pct)

    assert states(events) == STARTUP_PHASES
    assert progress == [100.0, 100.0]  # the last of the carriage-return-joined updates
    assert tracker.startup == Startup(
        model_weights_gib=14.9889,
        weights_load_s=4.332156,
        kv_cache_tokens=442_512,
        max_concurrency=13.5,
        max_concurrency_tokens=32_768,
        cuda_graph_gib=0.53,
        cuda_graph_s=22.0,
        init_engine_s=71.12,
        started_at=stamp("04-28 09:12:04", 2025),
        serving_at=stamp("04-28 09:13:30", 2025),
        vllm_version="0.8.5",
    )


@pytest.mark.parametrize(
    ("text", "state", "figures"),
    [
        (
            "INFO 07-18 12:26:26 model_runner.py:1071] Loading model weights took 1.9028 GB",
            S.PROFILING_MEMORY,
            {"model_weights_gib": 1.9028},
        ),
        (
            "INFO 07-18 12:26:26 [model_runner.py:1071] Loading model weights took 1.9028 GB",
            S.PROFILING_MEMORY,
            {"model_weights_gib": 1.9028},
        ),
        (
            "INFO 07-18 12:26:29 [executor.py:57] # GPU blocks: 464716, # CPU blocks: 16384",
            S.ALLOCATING_KV_CACHE,
            {},
        ),
        (
            "INFO 07-18 12:26:29 [executor.py:61] Maximum concurrency for 131072 tokens per "
            "request: 56.73x",
            S.ALLOCATING_KV_CACHE,
            {"max_concurrency_tokens": 131072, "max_concurrency": 56.73},
        ),
        (
            "INFO 03-21 20:15:45 [worker.py:267] model weights take 12.55GiB; non_torch_memory "
            "takes 0.16GiB; PyTorch activation peak memory takes 2.38GiB; the rest of the memory "
            "reserved for KV Cache is 56.18GiB.",
            S.ALLOCATING_KV_CACHE,
            {"kv_cache_gib": 56.18},
        ),
        (
            "INFO 12-19 22:58:27 [model_runner.py:1415] Capturing cudagraphs for decoding. This "
            "may lead to unexpected consequences if the model is not static.",
            S.CAPTURING_CUDA_GRAPHS,
            {},
        ),
        (
            "(EngineCore pid=9) INFO 06-02 00:51:40 [model_runner.py:295] Model loading took "
            "7.64 GiB and 32.969258 seconds",
            S.PROFILING_MEMORY,
            {"model_weights_gib": 7.64, "weights_load_s": 32.969258},
        ),
        (
            "(Worker_TP0 pid=1) INFO 06-23 14:53:25 [backends.py:292] Directly load the compiled "
            "graph(s) for compile range (1, 8192) from the cache, took 5.684 s",
            S.PROFILING_MEMORY,
            {},
        ),
        (
            "(APIServer pid=1) INFO 12-01 10:00:00 [utils.py:1] ▄▄ ▄█ █     █     █ ▀▄▀ █  "
            "version 0.12.0",
            S.INITIALIZING,
            {"vllm_version": "0.12.0"},
        ),
        (
            "(APIServer pid=1) INFO 04-28 09:13:30 [api_server.py:1] Starting vLLM API server 0 "
            "on http://0.0.0.0:8000",
            S.STARTING_API_SERVER,
            {},
        ),
        (
            "(APIServer pid=1) INFO 06-15 06:00:00 [logger.py:1] Received request chatcmpl-1: "
            "prompt: 'say: Application startup complete.'",
            None,
            {},
        ),
    ],
)
def test_it_reads_older_and_v0_variants_of_the_phase_lines(
    text: str, state: S | None, figures: dict[str, object]
) -> None:
    reading = read_line(text)
    if state is None:
        assert reading is None or reading.state is None
        return
    assert reading is not None
    assert (reading.state, reading.figures) == (state, figures)


@pytest.mark.parametrize(
    ("text", "failure"),
    [
        (
            "ERROR 03-19 10:55:18 [serving_chat.py:677] vllm.engine.multiprocessing."
            "MQEngineDeadError: Engine loop is not running.",
            S.FAILED_ENGINE_DEAD,
        ),
        (
            "ERROR 07-07 15:19:51 [core.py:515] EngineCore failed to start.",
            S.FAILED_OTHER,
        ),
        (
            "(EngineCore pid=3) ERROR 11-27 10:04:31 [multiproc_executor.py:154] Worker proc "
            "Worker_TP1 died unexpectedly, shutting down executor.",
            S.FAILED_ENGINE_DEAD,
        ),
        (
            "ERROR 07-24 08:26:01 [multiproc_executor.py:1] Worker VllmWorkerProcess pid 760 died, "
            "exit code: -9",
            S.FAILED_ENGINE_DEAD,
        ),
        (
            "(Worker_TP1 pid=4) [rank1]:[E1127 10:00:00.000000000 ProcessGroupNCCL.cpp:676] "
            "[Rank 1] To avoid data inconsistency, we are taking the entire process down.",
            S.FAILED_ENGINE_DEAD,
        ),
        ("(APIServer pid=433) ERROR 05-04 08:51:40 [serving.py:1267]     raise output", None),
        ("(APIServer pid=1) ERROR 05-12 01:48:42 [api_router.py:72]     raise self.dead", None),
        ('(APIServer pid=2)     raise RuntimeError("Engine core initialization failed. "', None),
    ],
)
def test_it_reads_failure_lines_but_not_the_code_lines_of_a_traceback(
    text: str, failure: S | None
) -> None:
    reading = read_line(text)
    assert (reading.failure if reading else None) is failure


# ---------------------------------------------------------------- failures


def _oom_error(at: float) -> ErrorEvent:
    return error("cuda_oom", "torch.OutOfMemoryError: CUDA out of memory. Tried to ...", at)


def test_it_fails_a_startup_on_an_oom_during_cuda_graph_capture() -> None:
    events = EventLog()
    tracker = StateTracker(events)
    for line in replay("startup-oom-cuda-graphs.log"):
        tracker.feed_log(line)
        if "torch.OutOfMemoryError" in line.text:
            tracker.on_error(_oom_error(line.at))  # the monitor classifies the traceback's end
    state, detail = update(tracker, REFUSED, stamp("06-15 06:00:45"), alive=False)

    assert state is S.FAILED_CUDA_OOM
    assert detail.startswith("torch.OutOfMemoryError: CUDA out of memory")
    last = transitions(events)[-1]
    assert (last.from_state, last.to_state) == (S.CAPTURING_CUDA_GRAPHS, S.FAILED_CUDA_OOM)
    assert last.at == stamp("06-15 06:00:44")  # "EngineCore failed to start."
    startup = tracker.startup
    assert startup is not None and startup.phase is S.CAPTURING_CUDA_GRAPHS
    assert startup.progress_pct == pytest.approx(100 * 51 / 67)
    # The process is gone, the failure stays: it is not a stop.
    assert update(tracker, REFUSED, stamp("06-15 06:00:50"), alive=False)[0] is S.FAILED_CUDA_OOM
    assert len(transitions(events)) == 6


def test_it_names_a_cause_that_arrives_after_the_checkpoint() -> None:
    events = EventLog()
    tracker = StateTracker(events)
    feed(tracker, replay("startup-oom-cuda-graphs.log"))
    assert update(tracker, REFUSED, stamp("06-15 06:00:45"), alive=False)[0] is S.FAILED_OTHER

    tracker.on_error(_oom_error(stamp("06-15 06:00:44")))

    assert tracker.state is S.FAILED_CUDA_OOM
    assert states(events)[-2:] == [S.FAILED_OTHER, S.FAILED_CUDA_OOM]


def test_it_keeps_the_root_cause_when_the_engine_dies_of_it() -> None:
    events = EventLog()
    tracker = serving_tracker(events)
    for line in replay("engine-death-oom.log"):
        tracker.feed_log(line)
        if "torch.OutOfMemoryError" in line.text:
            tracker.on_error(_oom_error(line.at))
        if "EngineDeadError:" in line.text:
            tracker.on_error(error("engine_dead", "EngineDeadError: ...", line.at))
    state, _ = update(tracker, REFUSED, stamp("06-15 09:14:15"), alive=False)

    assert state is S.FAILED_CUDA_OOM
    assert states(events) == [*STARTUP_PHASES, S.FAILED_CUDA_OOM]  # not stopping, not stopped
    assert transitions(events)[-1].at == stamp("06-15 09:14:07")


def test_it_takes_the_strongest_recent_error_as_the_cause_of_a_death() -> None:
    events = EventLog()
    tracker = serving_tracker(events)
    died_at = stamp("06-15 09:14:07")
    shm = "No available shared memory broadcast block found in 60 seconds."
    tracker.on_error(error("nccl_error", "RuntimeError: NCCL error: unhandled system error", 1.0))
    tracker.on_error(error("worker_timeout_or_hang", shm, died_at - 60))
    tracker.on_error(error("nccl_error", "[Rank 1] Watchdog caught collective ...", died_at - 30))
    tracker.on_error(error("other", "RuntimeError: Worker failed with error", died_at - 1))
    tracker.on_error(error("worker_timeout_or_hang", shm, died_at))
    feed(tracker, replay("engine-death-oom.log")[1:2])  # EngineCore encountered a fatal error.

    assert tracker.state is S.FAILED_NCCL
    update(tracker, REFUSED, died_at + 5, alive=False)
    last = transitions(events)[-1]
    assert (last.to_state, last.at) == (S.FAILED_NCCL, died_at)
    assert last.trigger == "[Rank 1] Watchdog caught collective ..."


def test_it_calls_a_hang_that_ends_in_an_rpc_timeout_a_hang() -> None:
    tracker = serving_tracker(EventLog())
    died_at = stamp("06-15 09:14:07")
    shm = "No available shared memory broadcast block found in 60 seconds."
    tracker.on_error(error("worker_timeout_or_hang", shm, died_at - 60))
    feed(tracker, replay("engine-death-oom.log")[1:2])
    tracker.on_error(error("worker_timeout_or_hang", "TimeoutError: RPC call timed out.", died_at))

    assert update(tracker, REFUSED, died_at + 5, alive=False)[0] is S.FAILED_HANG
    # A more specific cause reported a checkpoint later still replaces a hang ...
    tracker.on_error(error("cuda_illegal_access_or_xid", "Xid 79: fallen off the bus", died_at))
    assert tracker.state is S.FAILED_GPU_HARDWARE
    # ... but nothing replaces a specific cause.
    tracker.on_error(_oom_error(died_at))
    assert tracker.state is S.FAILED_GPU_HARDWARE


@pytest.mark.parametrize(
    ("log", "phases"),
    [
        ("engine-death-oom.log", STARTUP_PHASES),
        ("startup-oom-cuda-graphs.log", STARTUP_PHASES[:5]),
    ],
)
def test_it_takes_its_causes_from_the_exception_monitor(log: str, phases: list[S]) -> None:
    events = EventLog()
    tracker = serving_tracker(events) if log.startswith("engine") else StateTracker(events)
    monitor = ExceptionMonitor(events)
    lines = replay(log)
    for line in lines:
        monitor.feed(line)
        tracker.feed_log(line)
    now = lines[-1].at + 5
    for event in monitor.flush(now):
        tracker.on_error(event)

    assert update(tracker, REFUSED, now, alive=False)[0] is S.FAILED_CUDA_OOM
    assert states(events) == [*phases, S.FAILED_CUDA_OOM]


def test_it_calls_a_death_without_a_classified_cause_engine_dead() -> None:
    events = EventLog()
    tracker = serving_tracker(events)
    feed(tracker, replay("engine-death-oom.log"))

    assert update(tracker, REFUSED, stamp("06-15 09:14:15"), alive=False)[0] is (
        S.FAILED_ENGINE_DEAD
    )
    assert transitions(events)[-1].trigger.endswith("EngineCore encountered a fatal error.")


def test_it_starts_over_when_a_new_process_logs_its_first_line() -> None:
    events = EventLog()
    tracker = serving_tracker(events)
    feed(tracker, replay("engine-death-oom.log"))
    day_later = replay("startup-2026-06.log")
    restart = [LogLine(at=line.at + 86_400, text=line.text) for line in day_later]
    feed(tracker, restart)

    assert states(events) == [*STARTUP_PHASES, S.FAILED_ENGINE_DEAD, *STARTUP_PHASES]
    startup = tracker.startup
    assert startup is not None and startup.started_at == restart[0].at


def test_it_ignores_request_level_errors_and_errors_the_server_survives() -> None:
    events = EventLog()
    tracker = serving_tracker(events)
    now = stamp("06-15 06:05:00")
    tracker.on_error(error("tokenizer_or_request_error", "This model's maximum context ...", now))
    tracker.on_error(_oom_error(now))  # an OOM vLLM caught and survived

    assert update(tracker, probe(), now + 5)[0] is S.SERVING
    assert states(events) == STARTUP_PHASES


def test_it_ignores_a_request_error_as_the_cause_of_a_later_death() -> None:
    tracker = serving_tracker(EventLog())
    now = stamp("06-15 09:14:00")
    tracker.on_error(error("tokenizer_or_request_error", "This model's maximum context ...", now))
    feed(tracker, replay("engine-death-oom.log"))

    assert update(tracker, REFUSED, now + 20, alive=False)[0] is S.FAILED_ENGINE_DEAD


def test_it_follows_a_graceful_shutdown() -> None:
    events = EventLog()
    tracker = serving_tracker(events)
    lines = replay("graceful-shutdown.log")
    feed(tracker, lines)
    state, _ = update(tracker, REFUSED, stamp("06-15 11:30:13"), alive=False)

    assert state is S.STOPPED
    moves = transitions(events)[len(STARTUP_PHASES) :]
    assert [(t.to_state, t.at) for t in moves] == [
        (S.DRAINING, stamp("06-15 11:30:04")),
        (S.STOPPING, stamp("06-15 11:30:11")),
        (S.STOPPED, stamp("06-15 11:30:11")),
    ]
    assert moves[0].trigger.endswith("[shutdown] API server: shutdown triggered")


def test_it_stops_when_a_stopping_process_exits_before_its_last_line() -> None:
    tracker = serving_tracker(EventLog())
    feed(tracker, replay("graceful-shutdown.log")[:5])  # up to the EngineCore's SIGTERM
    assert tracker.state is S.STOPPING
    assert update(tracker, REFUSED, stamp("06-15 11:30:13"), alive=False)[0] is S.STOPPED


def test_it_fails_a_server_whose_process_vanishes_without_a_word() -> None:
    tracker = serving_tracker(EventLog())
    state, detail = update(tracker, REFUSED, stamp("06-15 07:00:00"), alive=False)

    assert state is S.FAILED_OTHER
    assert detail.startswith("the vLLM process exited without logging why")


def test_it_fails_a_startup_whose_process_exits_with_the_cause_reported() -> None:
    tracker = StateTracker(EventLog())
    feed(tracker, replay("startup-2026-06.log")[:10])  # loading the weights
    at = stamp("06-15 06:00:10")
    tracker.on_error(error("model_load_error", "safetensors_rust.SafetensorError: ...", at))

    assert update(tracker, REFUSED, at + 1, alive=True)[0] is S.LOADING_WEIGHTS
    assert update(tracker, REFUSED, at + 2, alive=False)[0] is S.FAILED_MODEL_LOAD


def test_it_holds_a_logged_failure_until_the_server_is_seen_alive() -> None:
    tracker = serving_tracker(EventLog())
    feed(tracker, replay("engine-death-oom.log")[:2])
    now = stamp("06-15 09:14:10")

    assert update(tracker, probe(progress=None, running=0), now)[0] is S.FAILED_ENGINE_DEAD
    assert update(tracker, probe(progress=True), now + 5)[0] is S.SERVING


def test_it_uses_an_earlier_error_as_the_cause_of_a_death_seen_on_health() -> None:
    tracker = StateTracker(EventLog())
    tracker.on_error(error("nccl_error", "RuntimeError: NCCL error: unhandled system error", 90))
    dead = probe(progress=None, status=503, error="HTTP 503")

    assert update(tracker, dead, 100)[0] is S.FAILED_NCCL
    # The failure holds: a later 200 without tokens flowing is not the server back.
    assert update(tracker, probe(progress=None, running=0), 105)[0] is S.FAILED_NCCL


def test_it_moves_to_a_new_process_that_comes_back_after_a_failure() -> None:
    tracker = serving_tracker(EventLog())
    feed(tracker, replay("engine-death-oom.log"))
    now = stamp("06-15 09:15:00")
    assert update(tracker, REFUSED, now, alive=False)[0] is S.FAILED_ENGINE_DEAD

    assert update(tracker, REFUSED, now + 5, alive=True)[0] is S.INITIALIZING


# ---------------------------------------------------------------- serving


def test_it_calls_a_hang_degraded_only_after_stall_after_s() -> None:
    events = EventLog()
    tracker = serving_tracker(events, stall_after_s=15)
    t0 = stamp("06-15 07:00:00")
    assert update(tracker, probe(True), t0)[0] is S.SERVING
    # /health stays 200 while no token moves; the counters stood still from t0 on.
    assert update(tracker, probe(False), t0 + 5)[0] is S.SERVING
    assert update(tracker, probe(False), t0 + 10)[0] is S.SERVING
    state, detail = update(tracker, probe(False), t0 + 15)

    assert (state, detail) == (S.DEGRADED, "no forward progress for 15 s with 12 requests running")
    last = transitions(events)[-1]
    assert (last.from_state, last.at, last.trigger) == (S.SERVING, t0 + 15, detail)


def test_it_stays_degraded_after_a_hang_until_tokens_flow_again() -> None:
    tracker = serving_tracker(EventLog(), stall_after_s=10)
    t0 = stamp("06-15 07:00:00")
    update(tracker, probe(False), t0)
    assert update(tracker, probe(False), t0 + 5)[0] is S.DEGRADED
    # The requests are gone but no token moved: still not trusted.
    assert update(tracker, probe(None, running=0), t0 + 10)[0] is S.DEGRADED
    assert update(tracker, probe(True), t0 + 15)[0] is S.SERVING
    # A new stall starts its own clock.
    assert update(tracker, probe(False), t0 + 20)[0] is S.SERVING


def test_it_does_not_count_unknown_progress_as_a_stall() -> None:
    tracker = serving_tracker(EventLog(), stall_after_s=10)
    t0 = stamp("06-15 07:00:00")
    update(tracker, probe(False), t0)
    update(tracker, probe(None), t0 + 5)  # restart or first scrape: the clock starts over
    assert update(tracker, probe(False), t0 + 12)[0] is S.SERVING


def test_it_keeps_a_saturated_server_serving() -> None:
    events = EventLog()
    tracker = serving_tracker(events, stall_after_s=15)
    t0 = stamp("06-15 07:00:00")
    for i in range(20):
        saturated = probe(
            True,
            running=256,
            requests_waiting=120,
            kv_cache_usage_pct=99.8,
            rates=Rates(generation_tokens_per_s=2400.0, preemptions_per_s=0.3),
        )
        state, detail = update(tracker, saturated, t0 + 5 * i)
        assert state is S.SERVING
    assert detail == "256 running, 120 waiting, KV cache 100 %"
    assert states(events) == STARTUP_PHASES


def test_it_calls_a_lasting_preemption_storm_degraded() -> None:
    tracker = serving_tracker(EventLog())
    t0 = stamp("06-15 07:00:00")
    storm = probe(True, rates=Rates(preemptions_per_s=4.0))
    seen = [update(tracker, storm, t0 + 5 * i)[0] for i in range(7)]

    assert seen == [S.SERVING] * 5 + [S.DEGRADED] * 2
    assert update(tracker, storm, t0 + 35)[1] == "preempting 4.0 requests/s for 40 s"
    calm = probe(True, rates=Rates(preemptions_per_s=0.1))
    assert update(tracker, calm, t0 + 40)[0] is S.SERVING


def test_it_calls_a_gpu_slowed_by_heat_degraded_but_not_one_at_its_power_cap() -> None:
    tracker = serving_tracker(EventLog())
    t0 = stamp("06-15 07:00:00")
    hot = [Gpu(index=0), Gpu(index=1, throttle_reasons=["sw_power_cap", "hw_thermal_slowdown"])]
    capped = [Gpu(index=0, throttle_reasons=["sw_power_cap"])]

    assert update(tracker, probe(), t0, gpus=hot) == (
        S.DEGRADED,
        "GPU throttled: GPU 1 hw_thermal_slowdown",
    )
    assert update(tracker, probe(), t0 + 5, gpus=capped)[0] is S.SERVING


def test_it_calls_a_failing_health_check_degraded_while_metrics_answer() -> None:
    tracker = serving_tracker(EventLog())
    failing = probe(True, status=None, error="no answer within 2 s")
    assert update(tracker, failing, stamp("06-15 07:00:00")) == (
        S.DEGRADED,
        "/health failed: no answer within 2 s",
    )


def test_it_reads_sleep_from_the_metric_first_and_else_from_the_log() -> None:
    tracker = serving_tracker(EventLog())
    t0 = stamp("06-15 07:00:00")
    asleep = probe(None, running=0, sleep_state="weights_offloaded")
    assert update(tracker, asleep, t0) == (S.SLEEPING, "engine sleep state is weights_offloaded")

    tracker = serving_tracker(EventLog())
    core = "(EngineCore pid=2101) INFO 06-15 07:00:00 [gpu_worker.py:117] "
    tracker.feed_log(LogLine(at=t0, text=core + "It took 1.100000 seconds to fall asleep."))
    assert update(tracker, probe(None, running=0), t0 + 1)[0] is S.SLEEPING
    woke = core + "It took 2.200000 seconds to wake up tags ['weights']."
    tracker.feed_log(LogLine(at=t0 + 2, text=woke))
    assert update(tracker, probe(None, running=0), t0 + 3)[0] is S.SLEEPING
    woke = core + "It took 0.300000 seconds to wake up tags ['kv_cache']."
    tracker.feed_log(LogLine(at=t0 + 4, text=woke))
    assert tracker.state is S.SERVING
    assert update(tracker, probe(None, running=0), t0 + 5)[0] is S.SERVING


def test_it_lets_log_lines_written_after_the_probe_win() -> None:
    tracker = StateTracker(EventLog())
    lines = replay("startup-2026-06.log")
    feed(tracker, lines)
    serving_at = stamp("06-15 06:00:48")
    # The probe went out a moment before "Application startup complete." was written.
    assert update(tracker, REFUSED, serving_at - 0.5)[0] is S.SERVING
    assert update(tracker, probe(), serving_at + 5)[0] is S.SERVING


# ---------------------------------------------------------------- endpoints only (attach mode)


def test_it_works_from_endpoints_and_metrics_alone() -> None:
    events = EventLog()
    tracker = StateTracker(events, stall_after_s=15)
    timed_out = VllmProbe(vllm=None, missing={"vllm": "http://x: no answer"}, timed_out=True)
    dead = probe(False, status=503, error="HTTP 503")

    seen = [
        update(tracker, REFUSED, 100, alive=True),
        update(tracker, probe(None), 105),
        update(tracker, dead, 110),
        update(tracker, probe(True), 115),
        update(tracker, timed_out, 120),
        update(tracker, REFUSED, 125, alive=False),
    ]

    assert [s for s, _ in seen] == [
        S.INITIALIZING,
        S.SERVING,
        S.FAILED_ENGINE_DEAD,
        S.SERVING,
        S.DEGRADED,
        S.STOPPED,
    ]
    assert seen[0][1] == "the vLLM process is alive; http://127.0.0.1:8000: cannot connect"
    assert seen[2][1] == "/health answered 503: the engine is dead"
    assert [t.at for t in transitions(events)] == [100, 105, 110, 115, 120, 125]
    assert tracker.startup is None


def test_it_says_degraded_while_elastic_ep_scales() -> None:
    scaling = probe(True, status=503, error='{"error":"The model is currently scaling."}')
    state, detail = update(StateTracker(EventLog()), scaling, 100)
    assert state is S.DEGRADED and "scaling" in detail


# ---------------------------------------------------------------- against the simulator


async def _follow(fleet: Fleet, tracker: StateTracker, seconds: float) -> list[S]:
    """Run the fleet's only host for `seconds`, as the agent would: its log lines to the
    exception monitor and the tracker, then every 5 s the monitor's errors, one real scrape
    and one NVML reading. Return the state after each checkpoint."""
    host = fleet.hosts[0]
    vllm = VllmCollector(fleet.manifest["hosts"][0]["vllm_url"], timeout_s=1.0)
    gpus = GpuCollector(host.sim.nvml)
    monitor = ExceptionMonitor(EventLog())
    seen, read = [], 0
    try:
        for _ in range(round(seconds / 5)):
            await fleet.advance(5)
            lines = list(host.sim.log.lines)
            for text in lines[read:]:
                line = LogLine(at=host.sim.now, text=text)
                monitor.feed(line)
                tracker.feed_log(line)
            read = len(lines)
            for event in monitor.flush(host.sim.now + 1):
                tracker.on_error(event)
            run = host.sim.run
            state, _ = tracker.update(
                await vllm.collect(),
                process_alive=run is not None and run.proc.running,
                gpus=gpus.collect(fleet.t)[0],
                now_mono=fleet.t,
                now_epoch=host.sim.now,
            )
            seen.append(state)
    finally:
        await vllm.close()
    return seen


def _runs(seen: list[S]) -> list[S]:
    return [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] is not s]


async def test_it_follows_a_simulated_server_through_a_hang_its_death_and_a_restart() -> None:
    events = EventLog()
    tracker = StateTracker(events, stall_after_s=15)
    config = FleetConfig(seed=3, scenarios=["engine_death"], speed=0, with_agents=False)
    async with run_fleet(config) as fleet:
        seen = await _follow(fleet, tracker, 200)

    # The stall begins at 80 s of uptime; /health stays 200 until the RPC to the workers
    # times out and the engine dies of it: a hang.
    assert _runs(seen) == [S.SERVING, S.DEGRADED, S.FAILED_HANG, S.INITIALIZING, S.SERVING]
    assert states(events) == [*STARTUP_PHASES, S.DEGRADED, S.FAILED_HANG, *STARTUP_PHASES]
    failed = next(t for t in transitions(events) if t.to_state is S.FAILED_HANG)
    assert failed.trigger.startswith("TimeoutError: RPC call to execute_model timed out.")
    degraded = seen.index(S.DEGRADED)
    assert seen[degraded - 3 : degraded] == [S.SERVING] * 3  # no progress, but not for 15 s yet
    startup = tracker.startup
    assert startup is not None and startup.vllm_version == "0.24.0"
    assert startup.kv_cache_tokens is not None and startup.serving_at is not None


async def test_it_sees_a_simulated_gpu_overheat_through_nvml() -> None:
    events = EventLog()
    tracker = StateTracker(events)
    config = FleetConfig(seed=3, scenarios=["thermal_throttling"], speed=0, with_agents=False)
    async with run_fleet(config) as fleet:
        seen = await _follow(fleet, tracker, 160)

    assert _runs(seen) == [S.SERVING, S.DEGRADED]
    assert transitions(events)[-1].trigger.startswith("GPU throttled: GPU 0 ")
