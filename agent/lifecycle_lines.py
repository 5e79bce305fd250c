"""What one line of vLLM's output says about its lifecycle: a phase, a figure, a failure.

`read_line(text)` returns a LineReading, or None for the many lines that say nothing about
the lifecycle. The messages are those of reference §5 (June-2026 main) and their older
variants back to vLLM 0.8 (V1 engine), plus the V0 engine's lines that 0.8 could still
print. Patterns match the message after vLLM's prefix, anchored at its start, so a
traceback's code line (`    raise RuntimeError("Engine core initialization failed. "`) or a
logged prompt never reads as the event itself. tqdm bars are searched anywhere in the raw
line: they arrive without a prefix, often several joined by carriage returns.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.lifecycle import LifecycleState as S
from agent.loglines import parse

# Startup figures a line can report: Startup field name -> value.
Figures = dict[str, float | int | str]


@dataclass(frozen=True, slots=True)
class LineReading:
    state: S | None = None  # the phase vLLM is in from this line on
    new_process: bool = False  # the first line a starting vLLM process writes
    failure: S | None = None  # vLLM is failing: FAILED_ENGINE_DEAD (runtime) or FAILED_OTHER
    figures: Figures = field(default_factory=dict)
    progress_pct: float | None = None  # a tqdm bar of the phase in `state`
    woke_tags: frozenset[str] | None = None  # parts a "wake up" line says are awake again


# Both parts must be awake before vLLM counts as awake (`/is_sleeping` stays true until then).
ALL_WAKE_TAGS = frozenset({"weights", "kv_cache"})

_NUMBER = r"-?[\d,]*\.?\d+"
_UVICORN_LEVEL = re.compile(r"^(?:INFO|WARNING|ERROR|CRITICAL):\s+")
# Before 0.7 the source had no opening bracket: "INFO 07-18 12:26:26 model_runner.py:1071] ...".
_BARE_SOURCE = re.compile(r"^[\w./-]+\.py:\d+\]\s+")


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _int(text: str) -> int:
    return int(_num(text))


def _gib(text: str) -> float:
    # "Graph capturing finished ... took -0.12 GiB" happens when capture frees memory.
    return max(0.0, _num(text))


def _figures(**fields: Callable[[str], float | int | str]) -> Callable[[re.Match[str]], Figures]:
    """Return a function that reads each named group of a match with its converter."""

    def read(match: re.Match[str]) -> Figures:
        groups = match.groupdict()
        return {name: convert(groups[name]) for name, convert in fields.items() if groups[name]}

    return read


def _none(match: re.Match[str]) -> Figures:
    return {}


# Lines that say vLLM is failing. Checked before everything else: after a failure, vLLM
# goes on to log its shutdown, and that must not read as a graceful stop.
_RUNTIME_FAILURES = (
    r"EngineCore encountered a fatal error\.",
    r"[\w.]*EngineDeadError(?::|$)",  # also 0.8's MQEngineDeadError, V0's AsyncEngineDeadError
    r"AsyncLLM output_handler failed\.",
    r"AsyncLLMEngine has failed, terminating server process",
    r"Worker proc \S+ died unexpectedly",
    r"Worker \S+ pid \d+ died, exit code",
    r"\[shutdown\] MPClient: engine core exited unexpectedly",
)
_STARTUP_FAILURES = (
    r"EngineCore failed to start\.",
    r"(?:RuntimeError: )?Engine core initialization failed",
    r"TimeoutError: Timed out waiting for engine core processes to start",
)
# torch's C++ log lines carry their own prefix ("[rank1]:[E1127 ...] [Rank 1] To avoid ...").
_NCCL_TAKEDOWN = re.compile(r"To avoid data inconsistency, we are taking the entire process down")

_VERSION = _figures(vllm_version=str)

# (message pattern, phase, figures). `new_process` lines are matched separately below.
_PHASE_LINES: tuple[tuple[str, S, Callable[[re.Match[str]], Figures]], ...] = (
    (r"non-default args: ", S.INITIALIZING, _none),
    (r"args: Namespace\(", S.INITIALIZING, _none),
    (r"Resolved architecture: ", S.INITIALIZING, _none),
    (r"Using max model len ", S.INITIALIZING, _none),
    (r"Waiting for init message from front-end", S.INITIALIZING, _none),
    (
        r"Initializing an? (?:V\d )?LLM engine \(v(?P<vllm_version>[^)\s]+)\) with config",
        S.INITIALIZING,
        _VERSION,
    ),
    (r"Starting to load model ", S.LOADING_WEIGHTS, _none),
    (r"Loading model from scratch", S.LOADING_WEIGHTS, _none),
    (
        rf"Loading weights took (?P<weights_load_s>{_NUMBER}) seconds",
        S.LOADING_WEIGHTS,
        _figures(weights_load_s=_num),
    ),
    # The end of loading: vLLM goes straight on to its profiling run (which also compiles).
    (
        rf"Model loading took (?P<model_weights_gib>{_NUMBER}) ?Gi?B(?: memory)? "
        rf"and (?P<weights_load_s>{_NUMBER}) seconds",
        S.PROFILING_MEMORY,
        _figures(model_weights_gib=_gib, weights_load_s=_num),
    ),
    (
        rf"Loading model weights took (?P<model_weights_gib>{_NUMBER}) ?Gi?B",  # V0
        S.PROFILING_MEMORY,
        _figures(model_weights_gib=_gib),
    ),
    (r"Using cache directory: .* for vLLM's torch\.compile", S.PROFILING_MEMORY, _none),
    (r"Dynamo bytecode transform time", S.PROFILING_MEMORY, _none),
    (r"Compiling a graph for ", S.PROFILING_MEMORY, _none),
    (r"Directly load the compiled graph", S.PROFILING_MEMORY, _none),
    (r"torch\.compile (?:takes|took) ", S.PROFILING_MEMORY, _none),
    (r"Initial profiling/warmup run took", S.PROFILING_MEMORY, _none),
    (r"Memory profiling takes", S.PROFILING_MEMORY, _none),
    (
        rf"Available KV cache memory: (?P<kv_cache_gib>{_NUMBER}) GiB",
        S.ALLOCATING_KV_CACHE,
        _figures(kv_cache_gib=_gib),
    ),
    (
        rf".*the rest of the memory reserved for KV Cache is (?P<kv_cache_gib>{_NUMBER}) ?GiB",
        S.ALLOCATING_KV_CACHE,
        _figures(kv_cache_gib=_gib),
    ),
    (
        rf"GPU KV cache size: (?P<kv_cache_tokens>{_NUMBER}) tokens",
        S.ALLOCATING_KV_CACHE,
        _figures(kv_cache_tokens=_int),
    ),
    (
        rf"Maximum concurrency for (?P<max_concurrency_tokens>{_NUMBER}) tokens per request: "
        rf"(?P<max_concurrency>{_NUMBER})x",
        S.ALLOCATING_KV_CACHE,
        _figures(max_concurrency_tokens=_int, max_concurrency=_num),
    ),
    (r"# (?:GPU|CUDA|cuda) blocks: \d+", S.ALLOCATING_KV_CACHE, _none),  # V0
    (r"CUDA graph memory profiling is enabled", S.ALLOCATING_KV_CACHE, _none),
    (r"Capturing cudagraphs for decoding", S.CAPTURING_CUDA_GRAPHS, _none),  # V0
    (r"Capturing the model for CUDA graphs", S.CAPTURING_CUDA_GRAPHS, _none),  # V0
    (
        rf"Graph capturing finished in (?P<cuda_graph_s>{_NUMBER}) secs?, "
        rf"took (?P<cuda_graph_gib>{_NUMBER}) GiB",
        S.CAPTURING_CUDA_GRAPHS,
        _figures(cuda_graph_s=_num, cuda_graph_gib=_gib),
    ),
    (
        r"init engine \(profile, create kv cache, warmup model\) took "
        rf"(?P<init_engine_s>{_NUMBER}) s",
        S.STARTING_API_SERVER,
        _figures(init_engine_s=_num),
    ),
    (r"(?:Engine \d+: )?vllm cache_config_info with initialization", S.STARTING_API_SERVER, _none),
    (r"Supported[_ ]tasks: ", S.STARTING_API_SERVER, _none),
    (r"Starting vLLM (?:API )?server(?: \d+)? on ", S.STARTING_API_SERVER, _none),
    (r"Available routes are:", S.STARTING_API_SERVER, _none),
    (r"Started server process \[\d+\]", S.STARTING_API_SERVER, _none),
    (r"Waiting for application startup\.", S.STARTING_API_SERVER, _none),
    (r"Application startup complete\.", S.SERVING, _none),
    (rf"It took {_NUMBER} seconds to fall asleep\.", S.SLEEPING, _none),
    (r"\[shutdown\] API server: shutdown triggered", S.DRAINING, _none),
    (r"\[shutdown\] API server: stopping engine client mode=drain", S.DRAINING, _none),
    (r"\[shutdown\] API server: stopping engine client", S.STOPPING, _none),
    (r"\[shutdown\] EngineCore: ", S.STOPPING, _none),
    (r"Shutting down\.?$", S.STOPPING, _none),
    (r"Waiting for application shutdown\.", S.STOPPING, _none),
    (r"Application shutdown complete\.", S.STOPPING, _none),
    (r"Finished server process \[\d+\]", S.STOPPED, _none),
)

_START_LINES = (
    re.compile(r"vLLM (?:API )?server version (?P<vllm_version>[^,\s]+)"),
    # The ASCII logo (unless VLLM_DISABLE_LOG_LOGO) prints the version beside block art.
    re.compile(r".*[█▄▀].*\bversion\s+(?P<vllm_version>\d+\.\d+[^\s,]*)"),
)
_WAKE = re.compile(rf"It took {_NUMBER} seconds to wake up(?: tags (?P<tags>.*?))?\.?$")
_WAKE_TAG = re.compile(r"'(\w+)'")
_LOAD_BAR = re.compile(
    r"Loading (?:\w+ )?checkpoint shards:\s*(?P<pct>\d+)% Completed \| (?P<n>\d+)/(?P<total>\d+)"
)
_GRAPH_BAR = re.compile(
    r"Capturing CUDA graphs?(?: shapes)?(?: \([^)]*\))?:\s*(?P<pct>\d+)%\|[^|]*\|\s*"
    r"(?P<n>\d+)/(?P<total>\d+)"
)
_COMPILED_FAILURES = tuple(
    (re.compile(p), S.FAILED_ENGINE_DEAD) for p in _RUNTIME_FAILURES
) + tuple((re.compile(p), S.FAILED_OTHER) for p in _STARTUP_FAILURES)
_COMPILED_PHASES = tuple((re.compile(p), state, read) for p, state, read in _PHASE_LINES)


def read_line(text: str) -> LineReading | None:
    """Return what `text` (one line of vLLM's output) says about the lifecycle, or None."""
    message = _message(text)
    return (
        _failure(text, message)
        or _start(message)
        or _wake(message)
        or _progress_bar(text)
        or _phase(message)
    )


def _message(text: str) -> str:
    parsed = parse(text)
    if parsed.level is not None:
        return _BARE_SOURCE.sub("", parsed.message, count=1)
    # uvicorn's own lines keep their "INFO:     " when vLLM prefixes the process name.
    return _UVICORN_LEVEL.sub("", parsed.message, count=1)


def _failure(text: str, message: str) -> LineReading | None:
    for pattern, state in _COMPILED_FAILURES:
        if pattern.match(message):
            return LineReading(failure=state)
    if _NCCL_TAKEDOWN.search(text):
        return LineReading(failure=S.FAILED_ENGINE_DEAD)
    return None


def _start(message: str) -> LineReading | None:
    for pattern in _START_LINES:
        if match := pattern.match(message):
            figures: Figures = {"vllm_version": match["vllm_version"]}
            return LineReading(state=S.INITIALIZING, new_process=True, figures=figures)
    return None


def _wake(message: str) -> LineReading | None:
    match = _WAKE.match(message)
    if match is None:
        return None
    # Before wake-up took tags, and with no tags given, everything wakes at once.
    tags = frozenset(_WAKE_TAG.findall(match["tags"] or "")) or ALL_WAKE_TAGS
    return LineReading(woke_tags=tags)


def _progress_bar(text: str) -> LineReading | None:
    for pattern, state in ((_GRAPH_BAR, S.CAPTURING_CUDA_GRAPHS), (_LOAD_BAR, S.LOADING_WEIGHTS)):
        matches = list(pattern.finditer(text))
        if matches:
            # Carriage returns join a bar's updates into one line: the last one is current.
            last = matches[-1]
            total = int(last["total"])
            pct = 100.0 * int(last["n"]) / total if total else float(last["pct"])
            return LineReading(state=state, progress_pct=min(100.0, pct))
    return None


def _phase(message: str) -> LineReading | None:
    for pattern, state, read in _COMPILED_PHASES:
        if match := pattern.match(message):
            return LineReading(state=state, figures=read(match))
    return None
