"""The log text of vLLM's failures and state changes, word for word (reference §5, §6).

Each function returns `Line`s: (process key, level, file:line, message). Level "" writes the
text raw (uvicorn, tqdm, torch's C++ logs). Process keys: "api", "core", "worker:<rank>".
An exception monitor matches these messages, so they must stay exactly as vLLM writes them.
"""

from __future__ import annotations

import time

from simulator.catalog import GIB, MIB

Line = tuple[str, str, str, str]

SITE = "/usr/local/lib/python3.12/dist-packages"
ENGINE_DEAD = (
    "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
    "See stack trace (above) for the root cause."
)
SHM_HANG = (
    "No available shared memory broadcast block found in 60 seconds. This typically happens "
    "when some processes are hanging or doing some time-consuming work (e.g. compilation, "
    "weight/kv cache quantization)."
)

NO_SPACE = "OSError: [Errno 28] No space left on device"  # as Python words ENOSPC

STOPPING_CLIENT = "stopping engine client mode=abort timeout=0s"

_BUSY_LOOP = (
    f'  File "{SITE}/vllm/v1/engine/core.py", line 926, in run_engine_core\n'
    "    engine_core.run_busy_loop()\n"
    f'  File "{SITE}/vllm/v1/engine/core.py", line 953, in run_busy_loop\n'
    "    self._process_engine_step()\n"
    f'  File "{SITE}/vllm/v1/engine/core.py", line 978, in _process_engine_step\n'
    "    outputs, model_executed = self.step_fn()\n"
    f'  File "{SITE}/vllm/v1/engine/core.py", line 392, in step\n'
    "    model_output = self.model_executor.execute_model(scheduler_output)\n"
)


def engine_dead(root: str, frames: str = "") -> list[Line]:
    """Return the EngineCore's fatal error ending in `root`, then the API server's death."""
    core = (
        "EngineCore encountered a fatal error.\nTraceback (most recent call last):\n"
        f"{_BUSY_LOOP}{frames}{root}"
    )
    api = (
        "AsyncLLM output_handler failed.\nTraceback (most recent call last):\n"
        f'  File "{SITE}/vllm/v1/engine/async_llm.py", line 477, in output_handler\n'
        "    outputs = await engine_core.get_output_async()\n"
        f'  File "{SITE}/vllm/v1/engine/core_client.py", line 884, in get_output_async\n'
        "    raise self._format_exception(outputs) from None\n"
        f"{ENGINE_DEAD}"
    )
    return [("core", "ERROR", "core.py:935", core), ("api", "ERROR", "async_llm.py:525", api)]


def cuda_oom(
    total_bytes: int, free_bytes: int, process_bytes: int, request_bytes: int
) -> list[Line]:
    """Return torch's CUDA OOM, as raised inside a model step, and the engine death after it."""
    allocated = process_bytes * 0.95
    reserved = process_bytes - allocated - 0.6 * GIB
    root = (
        "torch.OutOfMemoryError: CUDA out of memory. "
        f"Tried to allocate {request_bytes / MIB:.2f} MiB. "
        f"GPU 0 has a total capacity of {total_bytes / GIB:.2f} GiB of which "
        f"{free_bytes / MIB:.2f} MiB is free. Including non-PyTorch memory, this process has "
        f"{process_bytes / GIB:.2f} GiB memory in use. Of the allocated memory "
        f"{allocated / GIB:.2f} GiB is allocated by PyTorch, and {max(reserved, 0) / MIB:.2f} MiB "
        "is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try "
        "setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
        "documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )
    frames = (
        f'  File "{SITE}/vllm/v1/worker/gpu_model_runner.py", line 2712, in execute_model\n'
        "    model_output = self._model_forward(\n"
        f'  File "{SITE}/torch/nn/modules/module.py", line 1775, in _call_impl\n'
        "    return forward_call(*args, **kwargs)\n"
    )
    return engine_dead(root, frames)


def no_space_left() -> list[Line]:
    """Return a write on a full filesystem failing inside a model step, and the engine death."""
    return engine_dead(NO_SPACE)


def rpc_timeout(method: str = "execute_model") -> list[Line]:
    frames = (
        f'  File "{SITE}/vllm/v1/executor/multiproc_executor.py", line 264, in collective_rpc\n'
        '    raise TimeoutError(f"RPC call to {method} timed out.") from e\n'
    )
    return engine_dead(f"TimeoutError: RPC call to {method} timed out.", frames)


def illegal_memory_access() -> list[Line]:
    root = (
        "RuntimeError: CUDA error: an illegal memory access was encountered\n"
        "CUDA kernel errors might be asynchronously reported at some other API call, so the "
        "stacktrace below might be incorrect.\n"
        "For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
        "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."
    )
    return engine_dead(root)


def worker_died(worker: str) -> list[Line]:
    died = f"Worker proc {worker} died unexpectedly, shutting down executor."
    root = (
        f"RuntimeError: Worker failed with error '{died}', "
        "please check the stack trace above for the root cause"
    )
    return [("core", "ERROR", "multiproc_executor.py:154", died), *engine_dead(root)]


def nccl_watchdog(rank: int, at: float, timeout_s: float, seq: int) -> list[Line]:
    """Return the NCCL watchdog's timeout on `rank` (torch's C++ log format), then the death."""
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1e9):09d}"
    head = f"[rank{rank}]:[E{stamp} ProcessGroupNCCL.cpp"
    timeout_ms = int(timeout_s * 1000)
    work = (
        f"WorkNCCL(SeqNum={seq}, OpType=ALLREDUCE, NumelIn=8388608, NumelOut=8388608, "
        f"Timeout(ms)={timeout_ms})"
    )
    text = (
        f"{head}:632] [Rank {rank}] Watchdog caught collective operation timeout: {work} "
        f"ran for {timeout_ms + 59} milliseconds before timing out.\n"
        f"{head}:2271] [PG ID 2 PG GUID 3 Rank {rank}]  failure detected by watchdog at work "
        f"sequence id: {seq} PG status: last enqueued work: {seq}, last completed work: {seq - 1}\n"
        f"{head}:670] [Rank {rank}] Some NCCL operations have failed or timed out. Due to the "
        "asynchronous nature of CUDA kernels, subsequent GPU operations might run on "
        "corrupted/incomplete data.\n"
        f"{head}:676] [Rank {rank}] To avoid data inconsistency, we are taking the entire "
        "process down.\n"
        "terminate called after throwing an instance of 'c10::DistBackendError'"
    )
    return [(f"worker:{rank}", "", "", text), *worker_died(f"Worker_TP{rank}")]


def shm_hang() -> list[Line]:
    return [("core", "INFO", "shm_broadcast.py:466", SHM_HANG)]


def startup_failure(root: str) -> tuple[Line, ...]:
    """Return the EngineCore's failure to start with `root`, then the API server's error."""
    core = (
        "EngineCore failed to start.\nTraceback (most recent call last):\n"
        f'  File "{SITE}/vllm/v1/engine/core.py", line 1003, in run_engine_core\n'
        "    engine_core = EngineCoreProc(*args, **kwargs)\n"
        f'  File "{SITE}/vllm/v1/engine/core.py", line 223, in _initialize_kv_caches\n'
        "    kv_cache_configs = get_kv_cache_configs(\n"
        f"{root}"
    )
    api = (
        "Traceback (most recent call last):\n"
        f'  File "{SITE}/vllm/v1/engine/utils.py", line 1021, in wait_for_engine_startup\n'
        '    raise RuntimeError("Engine core initialization failed. "\n'
        "RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {'EngineCore': 1}"
    )
    return (("core", "ERROR", "core.py:1012", core), ("api", "", "", api))


def free_memory_too_low(free_bytes: int, total_bytes: int, utilization: float) -> str:
    return (
        f"ValueError: Free memory on device cuda:0 ({free_bytes / GIB:.2f}/{total_bytes / GIB:.2f} "
        f"GiB) on startup is less than desired GPU memory utilization ({utilization}, "
        f"{utilization * total_bytes / GIB:.2f} GiB). Decrease GPU memory utilization or reduce "
        "GPU memory used by other processes."
    )


def terminating(pid: int) -> list[Line]:
    """Return the API server's watchdog giving up on a dead engine, and uvicorn stopping."""
    return [
        (
            "api",
            "CRITICAL",
            "launcher.py:112",
            "AsyncLLMEngine has failed, terminating server process",
        ),
        *uvicorn_stopped(pid),
    ]


def shutdown(pid: int) -> list[Line]:
    """Return a graceful SIGTERM shutdown (mode abort, vLLM's default)."""
    return [
        ("api", "INFO", "api_server.py:1921", "[shutdown] API server: shutdown triggered"),
        ("api", "INFO", "async_llm.py:690", f"[shutdown] API server: {STOPPING_CLIENT}"),
        ("core", "INFO", "core.py:1102", "[shutdown] EngineCore: trigger received signal=SIGTERM"),
        ("core", "INFO", "core.py:958", "[shutdown] EngineCore: exiting busy loop"),
        *uvicorn_stopped(pid),
    ]  # fmt: skip


def uvicorn_stopped(pid: int) -> list[Line]:
    return [
        ("api", "", "", "INFO:     Shutting down"),
        ("api", "", "", "INFO:     Waiting for application shutdown."),
        ("api", "", "", "INFO:     Application shutdown complete."),
        ("api", "", "", f"INFO:     Finished server process [{pid}]"),
    ]


def stats_line(
    prompt_tps: float,
    gen_tps: float,
    running: int,
    waiting: int,
    preemptions: int,
    kv: float,
    hit: float,
) -> Line:
    message = (
        f"Engine 000: Avg prompt throughput: {prompt_tps:.1f} tokens/s, Avg generation "
        f"throughput: {gen_tps:.1f} tokens/s, Running: {running} reqs, Waiting: {waiting} reqs, "
        f"Preemptions: {preemptions}, GPU KV cache usage: {kv * 100:.1f}%, Prefix cache hit "
        f"rate: {hit * 100:.1f}%"
    )
    return ("api", "INFO", "loggers.py:259", message)


def fell_asleep(seconds: float, freed_bytes: int, still_bytes: int) -> list[Line]:
    return [
        ("core", "INFO", "gpu_worker.py:117", f"It took {seconds:.6f} seconds to fall asleep."),
        (
            "core",
            "INFO",
            "gpu_worker.py:120",
            f"Sleep mode freed {freed_bytes / GIB:.2f} GiB memory, "
            f"{still_bytes / GIB:.2f} GiB memory is still in use.",
        ),
    ]


def woke_up(seconds: float, tags: list[str] | None) -> list[Line]:
    message = f"It took {seconds:.6f} seconds to wake up tags {tags or ['weights', 'kv_cache']}."
    return [("core", "INFO", "gpu_worker.py:152", message)]
