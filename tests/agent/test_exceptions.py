"""Classifying real vLLM error texts (tests/data/vllm_errors) into the checkpoint's categories."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.checkpoint import ERROR_CATEGORIES
from agent.exceptions import Category, classify

CORPUS = Path(__file__).resolve().parent.parent / "data" / "vllm_errors"
HEADER_KEYS = ("source", "category", "split", "fields", "note")


@dataclass(frozen=True)
class CorpusText:
    name: str
    source: str
    category: str
    split: str
    fields: dict[str, Any]
    text: str


def corpus_text(name: str) -> str:
    """Return the error text of one corpus file, without its header."""
    return _load(CORPUS / name).text


def _load(path: Path) -> CorpusText:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    header: dict[str, str] = {}
    while lines and lines[0].startswith("# ") and lines[0][2:].split(":")[0] in HEADER_KEYS:
        key, value = lines.pop(0)[2:].split(":", 1)
        header[key] = value.strip()
    return CorpusText(
        name=path.name,
        source=header.get("source", ""),
        category=header.get("category", ""),
        split=header.get("split", ""),
        fields=json.loads(header.get("fields", "{}")),
        text="".join(lines),
    )


ALL_TEXTS = [_load(path) for path in sorted(CORPUS.glob("*.txt"))]


@pytest.mark.parametrize("sample", ALL_TEXTS, ids=[s.name for s in ALL_TEXTS])
def test_it_classifies_every_corpus_text_with_its_fields(sample: CorpusText) -> None:
    result = classify(sample.text)
    assert result.category == sample.category, result.message
    assert {key: result.fields.get(key) for key in sample.fields} == sample.fields
    assert result.message
    assert result.signature.startswith(f"{sample.category}:")


def test_it_labels_every_corpus_text_with_a_source_and_a_known_category() -> None:
    assert len(ALL_TEXTS) >= 80
    for sample in ALL_TEXTS:
        assert sample.source.startswith("https://") or sample.source == "synthetic", sample.name
        assert sample.category in ERROR_CATEGORIES, sample.name
        assert sample.split in ("train", "heldout"), sample.name
        assert sample.name.startswith(sample.category + "-"), sample.name


def test_it_keeps_a_held_out_part_gathered_after_the_rules_were_written() -> None:
    held_out = {s.category for s in ALL_TEXTS if s.split == "heldout"}
    assert sum(s.split == "heldout" for s in ALL_TEXTS) >= 40
    assert held_out == set(ERROR_CATEGORIES)


def test_it_names_exactly_the_checkpoint_categories() -> None:
    assert [c.value for c in Category] == list(ERROR_CATEGORIES)


def test_it_blames_the_root_cause_not_the_engine_dead_wrapper() -> None:
    oom = corpus_text("cuda_oom-20581-llama4-startup.txt")
    wrapper = corpus_text("engine_dead-41647-gemma4.txt")
    assert classify(oom + wrapper).category == Category.CUDA_OOM
    assert classify(wrapper + oom).category == Category.CUDA_OOM
    assert classify(wrapper).category == Category.ENGINE_DEAD


def test_it_says_what_went_wrong_in_the_exception_line_not_the_quoted_source() -> None:
    result = classify(corpus_text("nccl_error-7800-mistral-large.txt"))
    expected = (
        "RuntimeError: NCCL error: unhandled system error (run with NCCL_DEBUG=INFO for details)"
    )
    assert result.message == expected
    assert result.fields["nccl_error"] == "unhandled system error"


# The messages of reference §6 as vLLM prints them, with example numbers.
REFERENCE_SIGNATURES = [
    (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total"
        " capacity of 79.19 GiB of which 1.02 GiB is free. Including non-PyTorch memory, this"
        " process has 78.16 GiB memory in use.",
        Category.CUDA_OOM,
        {"gpu": 0, "requested_bytes": 2 * 1024**3, "free_bytes": int(1.02 * 1024**3)},
    ),
    (
        "ValueError: Free memory on device cuda:0 (70.5/79.2 GiB) on startup is less than desired"
        " GPU memory utilization (0.92, 72.9 GiB). Decrease GPU memory utilization or reduce GPU"
        " memory used by other processes.",
        Category.CUDA_OOM,
        {"gpu": 0, "config_key": "gpu_memory_utilization", "total_bytes": int(79.2 * 1024**3)},
    ),
    (
        "ValueError: To serve at least one request with the model's max seq len (131072), (16.0 GiB"
        " KV cache is needed, which is larger than the available KV cache memory (9.5 GiB). Based"
        " on the available memory, the estimated maximum model length is 77760. Try increasing"
        " `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
        Category.KV_CACHE_EXHAUSTED,
        {"config_key": "max_model_len", "estimated_max_model_len": 77760},
    ),
    (
        "[rank0]:[E1127 10:04:31.123 ProcessGroupNCCL.cpp:632] [Rank 0] Watchdog caught collective"
        " operation timeout: WorkNCCL(SeqNum=412, OpType=ALLREDUCE, NumelIn=8192, NumelOut=8192,"
        " Timeout(ms)=600000) ran for 600059 milliseconds before timing out.",
        Category.NCCL_ERROR,
        {"nccl_op": "ALLREDUCE", "timeout_ms": 600000},
    ),
    (
        "TimeoutError: RPC call to sample_tokens timed out.",
        Category.WORKER_TIMEOUT_OR_HANG,
        {"rpc_method": "sample_tokens"},
    ),
    (
        "TimeoutError: Timed out waiting for engine core processes to start. This is often caused"
        " by slow weight loading for large models. Waited 600s (configured by"
        " VLLM_ENGINE_READY_TIMEOUT_S).",
        Category.WORKER_TIMEOUT_OR_HANG,
        {"timeout_s": 600},
    ),
    (
        "NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>', name=<unknown>, Graphics Exception",
        Category.CUDA_ILLEGAL_ACCESS_OR_XID,
        {"xid": 13, "pci_bus_id": "0000:cb:00"},
    ),
    (
        "ValueError: Model architectures ['FooForCausalLM'] failed to be inspected. Please check"
        " the logs for more details.",
        Category.MODEL_LOAD_ERROR,
        {"exception": "ValueError"},
    ),
    (
        "[shutdown] MPClient: engine core exited unexpectedly; starting cleanup",
        Category.ENGINE_DEAD,
        {},
    ),
    (
        "ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): address"
        " already in use",
        Category.NETWORK_OR_PORT,
        {"port": 8000, "errno": "EADDRINUSE"},
    ),
    (
        "(EngineCore_DP0 pid=812) ERROR 11-27 10:04:31 [multiproc_executor.py:150] Worker proc"
        " VllmWorker-1 died unexpectedly, shutting down executor.",
        Category.WORKER_TIMEOUT_OR_HANG,
        {},
    ),
    (
        "ERROR 11-27 10:04:31 [multiproc_worker_utils.py:120] Worker VllmWorkerProcess pid 4242"
        " died, exit code: -9",
        Category.SYSTEM_RESOURCE,
        {"signal": "SIGKILL"},
    ),
]


@pytest.mark.parametrize(("text", "category", "fields"), REFERENCE_SIGNATURES)
def test_it_classifies_the_reference_failure_signatures(
    text: str, category: Category, fields: dict[str, Any]
) -> None:
    result = classify(text)
    assert result.category == category
    assert {key: result.fields.get(key) for key in fields} == fields


def test_it_gives_repeats_of_one_error_one_signature() -> None:
    first = classify(
        "(Worker_TP1 pid=901) ERROR 11-27 10:04:31 [worker.py:1] torch.OutOfMemoryError: CUDA out"
        " of memory. Tried to allocate 1.50 GiB. GPU 1 has a total capacity of 79.19 GiB of which"
        " 12.00 MiB is free. Process 4242 has 79.17 GiB memory in use."
    )
    again = classify(
        "(Worker_TP0 pid=77) ERROR 11-28 23:59:01 [worker.py:9] torch.OutOfMemoryError: CUDA out"
        " of memory. Tried to allocate 250.00 MiB. GPU 0 has a total capacity of 79.19 GiB of which"
        " 3.00 MiB is free. Process 31337 has 79.18 GiB memory in use."
    )
    other = classify("TimeoutError: RPC call to execute_model timed out.")
    assert first.signature == again.signature
    assert first.fields["gpu"] == 1 and again.fields["gpu"] == 0
    assert first.signature != other.signature


def test_it_removes_addresses_and_request_ids_from_signatures() -> None:
    first = classify(
        "RuntimeError: CUDA error: an illegal memory access was encountered at 0x7f3a2c001000"
        " for request chatcmpl-8a6fdecb7b8e43bf85c67af88a39f279"
    )
    again = classify(
        "RuntimeError: CUDA error: an illegal memory access was encountered at 0x7f00ffee0000"
        " for request chatcmpl-0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
    )
    assert first.signature == again.signature
    assert "0x" not in first.signature


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "   \n\n\t",
        "\x00\x01\x02\xff",
        b"\x00\xff\xfe\x80 not utf-8 \xc3\x28",
        bytes(random.Random(7).randrange(256) for _ in range(20_000)),
        "(" * 50_000,
        "[" * 50_000 + "ERROR",
        "Traceback (most recent call last):\n" * 5_000,
        "x" * 1_000_000,
        "ERROR 11-27 10:04:31 [core.py:1] boom\n" * 30_000,
    ],
    ids=[
        "empty",
        "blank",
        "control",
        "bytes",
        "random-bytes",
        "parens",
        "brackets",
        "tracebacks",
        "one-megabyte-line",
        "thirty-thousand-lines",
    ],
)
def test_it_never_raises_and_bounds_its_work(junk: str | bytes) -> None:
    started = time.perf_counter()
    result = classify(junk)
    assert time.perf_counter() - started < 3.0
    assert result.category in set(Category)
    assert len(result.message) <= 400
    assert len(result.signature) <= 240


def test_it_finds_the_root_cause_at_the_end_of_a_megabyte_of_noise() -> None:
    noise = "INFO 11-27 10:00:00 [loggers.py:1] Engine 000: Avg prompt throughput: 1.0 tokens/s\n"
    text = noise * 15_000 + corpus_text("nccl_error-6732-unhandled-cuda.txt")
    assert len(text) > 1_000_000
    assert classify(text).category == Category.NCCL_ERROR


def test_it_names_the_setting_mentioned_first_as_the_one_at_fault() -> None:
    result = classify(
        "ValueError: max_num_batched_tokens (2048) is smaller than max_model_len (8192)."
    )
    assert (result.category, result.fields["config_key"]) == (
        Category.CONFIG_ERROR,
        "max_num_batched_tokens",
    )


def test_it_reads_an_exit_code_of_minus_nine_as_a_kill() -> None:
    result = classify("torch.distributed.elastic.multiprocessing.errors.ChildFailedError:")
    assert result.category == Category.OTHER
    killed = classify("ChildFailedError: worker failed, exitcode  : -9 (pid: 4242)")
    assert (killed.category, killed.fields["signal"]) == (Category.SYSTEM_RESOURCE, "SIGKILL")
