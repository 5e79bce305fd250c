"""Sort one vLLM error (a line or a whole traceback) into an ERROR_CATEGORIES category.

`classify(text)` is a pure function: no Django, no running agent, no I/O. It works on the
text as vLLM and its libraries print it, log prefixes and all, in three steps:

1. Clean: drop ANSI colours and control bytes, strip the prefixes each line may carry
   (`(EngineCore_DP0 pid=812) ERROR 11-27 10:04:31 [core.py:708] `, docker compose's
   `vllm-1  | `, `[rank0]: `, timestamps, dmesg clocks), and mark traceback frame and
   source lines, which quote code rather than say what happened.
2. Weigh evidence: every rule is a phrase or exception name from one vocabulary (CUDA,
   NCCL, NVML/XID, Hugging Face, the OS's errno names, vLLM's own messages) with a weight.
   Wrappers that only say "something died" (EngineDeadError, "Engine core initialization
   failed", "Worker proc died") weigh little, so the root cause printed before them wins.
   A match on a source line counts for less than one on the exception line itself.
3. Describe: the strongest match (the earliest among equals: tracebacks print the cause
   first) gives the category and the message line; the fields are read from that line
   and the rest of the text; the signature is the message without its numbers.

The work is bounded: at most MAX_TEXT_CHARS of text (head and tail), MAX_LINES lines and
MAX_LINE_CHARS per line, and a fixed number of matches per rule.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_TEXT_CHARS = 100_000
MAX_LINES = 2_000
MAX_LINE_CHARS = 4_000
MAX_MESSAGE_CHARS = 400
MAX_SIGNATURE_CHARS = 240
MATCHES_PER_RULE = 8
# A match on a quoted source line ("    raise ValueError(...)") is weaker than on the
# exception line: the same words appear in code that did not run.
CODE_LINE_PENALTY = 4
# Evidence this strong on a line without a log level is an error on its own ("Killed").
STRONG_WEIGHT = 8


class Category(StrEnum):
    CUDA_OOM = "cuda_oom"
    KV_CACHE_EXHAUSTED = "kv_cache_exhausted"
    NCCL_ERROR = "nccl_error"
    ENGINE_DEAD = "engine_dead"
    WORKER_TIMEOUT_OR_HANG = "worker_timeout_or_hang"
    MODEL_LOAD_ERROR = "model_load_error"
    CONFIG_ERROR = "config_error"
    CUDA_ILLEGAL_ACCESS_OR_XID = "cuda_illegal_access_or_xid"
    SYSTEM_RESOURCE = "system_resource"
    NETWORK_OR_PORT = "network_or_port"
    TOKENIZER_OR_REQUEST_ERROR = "tokenizer_or_request_error"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Classification:
    category: Category
    message: str  # the line that says what went wrong, without its log prefix
    signature: str  # stable across repeats: category plus the message without numbers
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Rule:
    category: Category
    weight: int
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class _Evidence:
    weight: int
    line: int
    start: int  # offset of the match in its line
    category: Category


def _rules(category: Category, weight: int, *patterns: str) -> list[_Rule]:
    return [_Rule(category, weight, re.compile(p, re.MULTILINE)) for p in patterns]


C = Category
# Weights: 10-12 a specific root cause, 8-9 a strong hint, 5-6 a generic failure,
# 2-4 a wrapper or a soft signal. Patterns use bounded repeats only: they run on junk too.
RULES: tuple[_Rule, ...] = tuple(
    _rules(
        C.CUDA_ILLEGAL_ACCESS_OR_XID,
        11,
        r"(?i)illegal memory access",
        r"(?i)an illegal instruction was encountered",
        r"(?i)unspecified launch failure",
        r"(?i)misaligned address",
        r"(?i)device-side assert(?:ion)? triggered",
        r"(?i)uncorrectable ECC error",
        r"\bXid\b|\bXID\b",
        r"(?i)fallen off the bus",
        r"(?i)GPU is lost|GPU_IS_LOST",
        r"cudaErrorIllegalAddress|CUDA_ERROR_ILLEGAL_ADDRESS|cudaErrorLaunchFailure",
    )
    + _rules(
        C.CUDA_ILLEGAL_ACCESS_OR_XID,
        7,
        r"No CUDA GPUs are available",
        r"CUBLAS_STATUS_",
        r"(?i)NVML.{0,40}Driver/library version mismatch",
    )
    + _rules(C.CUDA_ILLEGAL_ACCESS_OR_XID, 5, r"(?i)CUDA error: ")
    + _rules(
        C.SYSTEM_RESOURCE,
        12,
        r"(?i)node running low on memory|killed due to memory pressure",
        r"(?i)exceeds the memory usage threshold|Ray killed this worker",
        r"(?i)(?:creat|extend|allocat)\w{0,3} (?:a )?shared memory segment",
        r"(?i)failed to extend /dev/shm",
    )
    + _rules(
        C.CUDA_OOM,
        10,
        r"(?i)CUDA out of memory",
        r"OutOfMemoryError",
        r"(?i)CUDA error: out of memory",
        r"(?i)Cuda failure '?out of memory",
        r"cudaErrorMemoryAllocation|CUDA_ERROR_OUT_OF_MEMORY|(?:CUBLAS|CUDNN)_STATUS_ALLOC_FAILED",
        r"(?i)HIP (?:error: )?out of memory",
        r"(?i)Free memory on device.{0,80}less than desired GPU memory utilization",
        r"(?i)Error in memory profiling",
    )
    + _rules(
        C.KV_CACHE_EXHAUSTED,
        10,
        r"(?i)No available memory for the cache blocks",
        r"(?i)larger than the maximum number of tokens that can be stored in KV cache",
        r"(?i)To serve at least one request with the models?'s? max seq len",
        r"(?i)KV cache is needed, which is larger than the available KV cache memory",
        r"(?i)Insufficient memory for KV cache|not enough KV cache space",
        r"(?i)exceeds the capacity of block_manager",
        r"(?i)is preempted by PreemptionMode",
        r"(?i)Available KV cache memory: -",
    )
    + _rules(
        C.SYSTEM_RESOURCE,
        10,
        r"(?i)No space left on device|\[Errno 28\]|\bENOSPC\b|StorageFull",
        r"(?i)Too many open files|\[Errno 24\]|\bEMFILE\b|\bENFILE\b",
        r"(?i)Disk quota exceeded|\bEDQUOT\b",
        r"(?i)\bBus error\b|\bSIGBUS\b",
        r"(?i)oom-kill|Out of memory: Killed process|invoked oom-killer",
        r"(?i)Cannot allocate memory|\[Errno 12\]|\bENOMEM\b",
        r"(?i)can't start new thread|pthread_create failed|Resource temporarily unavailable",
        r"(?i)Read-only file system|\bEROFS\b|Input/output error|\[Errno 5\]",
    )
    + _rules(
        C.SYSTEM_RESOURCE,
        8,
        r"(?<![\w.])MemoryError\b",
        r"(?:^|[\]\s])Killed\s*$",
        r"(?i)exit ?code\s{0,4}:?\s{0,4}-9\b|exit(?:ed with)? code:? 137\b|\bSIGKILL\b|signal 9\b",
    )
    + _rules(
        C.NCCL_ERROR,
        10,
        r"(?i)Watchdog caught collective operation timeout",
        r"(?i)Some NCCL operations have failed or timed out",
    )
    + _rules(
        C.NCCL_ERROR,
        9,
        r"(?i)NCCL error",
        r"nccl(?:Unhandled\w{0,20}|System|Internal|Invalid\w{0,20}|Remote)Error",
        r"(?i)unhandled (?:system|cuda) error \(run with NCCL_DEBUG",
        r"NCCL WARN",
        r"(?i)NCCL communicator was aborted",
        r"NET/IB\b.{0,80}(?i:error)",
        r"\bDistBackendError\b",
        r"(?i)remote process exited or there was a network error",
    )
    + _rules(
        C.MODEL_LOAD_ERROR,
        9,
        r"(?i)Cannot access gated repo|access a gated repo|GatedRepoError",
        r"(?i)is not a local folder and is not a valid model identifier",
        r"(?i)Cannot find any model weights",
        r"HFValidationError|RepositoryNotFoundError|LocalEntryNotFoundError",
        r"(?i)Repository Not Found|does not appear to have (?:a )?files? named",
        r"(?i)Model architectures? \[.{0,200}?\] (?:are|is) not supported",
        r"(?i)failed to be inspected",
        r"(?i)couldn't connect to 'https://huggingface\.co'",
        r"(?i)SafetensorError|safetensors_rust|Error while deserializing header|HeaderTooLarge",
        r"(?i)weights were not initialized from checkpoint",
        r"(?i)set the option `?trust_remote_code=True|requires you to execute the configuration",
        r"(?i)Unrecognized model in",
        r"(?i)No such file or directory:.{0,200}\.(?:json|safetensors|bin|pt|model|gguf)\b",
        r"(?i)does not recognize this architecture|Can't load the (?:configuration|model) ",
        r"HTTPSConnectionPool\(host='huggingface\.co'",
    )
    + _rules(
        C.MODEL_LOAD_ERROR,
        8,
        r"\b40[13] Client Error|Unauthorized for url|huggingface_hub\.errors",
        r"KeyError: '(?:model|lm_head|transformer)\.[\w.]{1,200}'",
        r"(?i)Unrecognized configuration class",
        r"(?i)size mismatch for",
    )
    + _rules(
        C.CONFIG_ERROR,
        9,
        r"(?i)User-specified max_model_len",
        r"(?i)greater than the derived max_model_len",
        r"(?i)must be divisible by",
        r"(?i)Bfloat16 is only supported on GPUs",
        r"(?i)compute capability (?:below|of at least)",
        r"(?i)Unknown quantization method|quantization method .{0,60} not supported",
        r"(?i)quantization method specified in the model config",
        r"(?i)error: unrecognized arguments|error: argument -{1,2}\w|invalid choice: ",
        r"(?i)\d+ validation errors? for \w+Config|Value error, ",
        r"(?i)number of (?:required )?GPUs exceeds|larger than the number of available GPUs",
        r"(?i)is not divisible by",
        r"Cannot re-initialize CUDA in forked subprocess",
    )
    + _rules(
        C.CONFIG_ERROR,
        7,
        r"(?i)\b[a-z]+_[a-z_]+ (?:\(\d+\) )?(?:must|should) be (?:greater|less|smaller|larger|at)",
        r"(?i)\b[a-z]+_[a-z_]+ \(\d+\) is (?:greater|less|smaller|larger) than",
    )
    + _rules(
        C.TOKENIZER_OR_REQUEST_ERROR,
        10,
        r"(?i)maximum context length is \d+ tokens",
        r"(?i)is longer than the maximum model length",
        r"(?i)you requested \d+ tokens",
        r"(?i)Input prompt \(\d+ tokens\) is too long",
    )
    + _rules(
        C.TOKENIZER_OR_REQUEST_ERROR,
        9,
        r"(?i)Error code: 4\d\d\b|'code': 4\d\d\b|\"code\": ?4\d\d\b",
        r"(?i)max_tokens must be at least",
        r"(?i)did not match any variant of untagged enum",
        r"\w{0,30}Tokeni[sz]\w{0,30}Error\b",
        r"(?i)Error in preprocessing prompt inputs",
        r"(?i)default chat template is no longer allowed|chat template",
        r"BadRequestError",
        r"(?i)Can't load tokenizer|jinja2\.exceptions|validation errors? for \w{0,40}Request\b",
    )
    + _rules(
        C.NETWORK_OR_PORT,
        8,
        r"(?i)Address already in use|\[Errno 98\]|\bEADDRINUSE\b",
        r"(?i)error while attempting to bind on address",
        r"(?i)cannot assign requested address|\[Errno 99\]|\bEADDRNOTAVAIL\b",
        r"(?i)Connection refused|\[Errno 111\]|\bECONNREFUSED\b|ConnectionRefusedError",
        r"(?i)Connection reset by peer|\bECONNRESET\b|Connection closed by peer",
        r"APIConnectionError|connectFullMesh failed",
        r"(?i)Name or service not known|Temporary failure in name resolution|gaierror",
        r"(?i)Network is unreachable|No route to host|\bEHOSTUNREACH\b",
        r"\bDistNetworkError\b|(?i:failed to listen on any local network address)",
    )
    + _rules(
        C.NETWORK_OR_PORT,
        7,
        r"(?i)connection (?:timed out|timeout)|port .{0,40}is reachable",
        r"\bConnectionError\b",
    )
    + _rules(
        C.WORKER_TIMEOUT_OR_HANG,
        10,
        r"(?i)RPC call to \w+ timed out",
        r"(?i)Timed out waiting for engines?\b",
        r"GetTimeoutError",
    )
    + _rules(
        C.WORKER_TIMEOUT_OR_HANG,
        6,
        r"TimeoutError\b",
        r"(?i)execution is hanging|processes are hanging|seems to be hanging",
    )
    + _rules(
        C.WORKER_TIMEOUT_OR_HANG,
        5,
        r"(?i)Worker proc \S{1,80} died unexpectedly",
        r"(?i)Worker \S{1,80} pid \d+ died, exit code",
        r"ActorDiedError",
    )
    + _rules(
        C.WORKER_TIMEOUT_OR_HANG,
        4,
        r"(?i)No available (?:shared memory broadcast )?block found",
    )
    # "Worker failed with error '<cause>'" quotes its cause: a known cause outweighs it.
    + _rules(C.WORKER_TIMEOUT_OR_HANG, 3, r"(?i)Worker failed with error")
    + _rules(
        C.OTHER,
        6,
        r"has no attribute|cannot import name|No module named|undefined symbol|Symbol not found",
        r"unexpected keyword argument|object is not (?:callable|subscriptable|iterable)",
        r"\b(?:Attribute|Import|ModuleNotFound|Type|Name|Syntax|Index|Recursion)Error\b",
        r"\bNotImplementedError\b|Segmentation fault|\bSIGSEGV\b",
    )
    + _rules(
        C.ENGINE_DEAD,
        3,
        r"EngineDeadError",
        r"(?i)EngineCore encountered a fatal error|EngineCore hit an exception",
        r"(?i)Engine core initialization failed|EngineCore failed to start",
        r"(?i)engine core exited unexpectedly|Engine process failed to start",
        r"(?i)Engine loop is not running|Engine loop has died|Background loop has errored",
        r"(?i)output_handler failed",
    )
)

# Step 1: cleaning. One alternative per prefix kind; each consumes at most one space after
# itself so the indentation of traceback source lines survives.
_PREFIX = re.compile(
    r"(?:"
    r"[ \t]*[│┃|][ ]?"  # box borders of rich tracebacks, "  | " of log viewers
    r"|[\w.-]{1,64}[ \t]{1,8}\|[ ]?"  # docker compose: "vllm-1  | "
    r"|\((?:[^()\n]|\([^()\n]{0,80}\)){1,120}\)[ ]?"  # "(EngineCore_DP0 pid=812) "
    r"|\[[\w.-]{1,40}\]:[ ]?"  # torch.distributed "[rank0]: ", wrappers "[vllm]: "
    r"|\[\d{4}-\d\d-\d\d[T ][\d:.,]{5,20}Z?\][ ]?"  # "[2026-02-24T20:21:58Z] "
    r"|\d{4}-\d\d-\d\d[T ][\d:.,]{5,20}Z?[ ]"  # "2024-12-19 21:40:35 "
    r"|\[[ \d]{1,8}\.\d{3,6}\][ ]?"  # dmesg: "[ 1843.308145] "
    r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S{1,64} \S{1,64}: "  # journald
    r"|(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)(?=[ ]|$)"  # "ERROR 11-27 10:04:31 [core.py:7] "
    r"(?:[ ]+(?:\d{4}-)?\d\d-\d\d[ ]+[\d:.]{8,15})?(?:[ ]+\d{1,8})?"
    r"(?:[ ]+(?:\[[^\]\n]{1,120}[\]\[]\]?|[\w./-]{1,80}:\d{1,6}\]))?[ ]?"
    r"|(?:INFO|WARNING|ERROR|CRITICAL):[ ]+"  # uvicorn: "ERROR:    "
    r")"
)
# Colour codes, raw or as printed by syslog ("#033[0m") and terminals ("^[[0m").
_ANSI = re.compile(
    r"\x1b\[[0-9;?]{0,20}[A-Za-z]|\x1b\][^\x07]{0,200}\x07|(?:\^\[|#033)\[[0-9;]{0,20}m"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FRAME = re.compile(r"\s*(?:File \"|File ~|frame #\d+:|Traceback \(most recent call last\))")
_CODE = re.compile(r"(?:[ \t]{2,}\S|\s*[\^~]{3,}\s*$)")
_TRAILING_BORDER = " \t│┃"

# Step 3: describing.
_EXCEPTION_AT_START = re.compile(
    r"((?:[A-Za-z_]\w{0,60}\.){0,6}[A-Z]\w{0,60}(?:Error|Exception|Exit|Interrupt|Fault))"
    r"(?::|$)"
)
_EXCEPTION_ANYWHERE = re.compile(
    r"(?<![\w.])((?:[A-Za-z_]\w{0,60}\.){0,6}[A-Z]\w{0,60}(?:Error|Exception))(?=: |\(['\"])"
)
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_ID = re.compile(
    r"\b(?=[0-9a-f-]{0,40}\d)[0-9a-f]{6,}(?:-[0-9a-f]{2,})*\b|\b\w{0,12}-[0-9a-f]{16,}\b"
)
_NUMBER = re.compile(r"\d+")
# "Tried to allocate 250.00 MiB" and "... 1.50 GiB" are the same error.
_SIZE_WORD = re.compile(r"\b\d+(?:\.\d+)? ?(?:[KMGT]i?B|bytes)\b")
_SPACES = re.compile(r"\s+")
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SIZE = r"([\d.]{1,12}) ?([KMGT]i?B|B)\b"


def classify(text: str | bytes) -> Classification:
    """Return the category, message, signature and fields of one error's text."""
    lines = _clean(_bounded(text))
    joined = "\n".join(line for line, _ in lines)
    evidence = _strongest(lines, joined)
    if evidence is None:
        return _unmatched(lines)
    message = _message(lines[evidence.line][0], evidence.start)
    category = evidence.category
    return Classification(
        category=category,
        message=message,
        signature=signature(category, message),
        fields=_fields(category, message, joined),
    )


def signature(category: str, message: str) -> str:
    """Return a key equal for repeats of one error: its message without numbers or ids."""
    text = _SIZE_WORD.sub("<size>", _HEX.sub("<hex>", message))
    text = _ID.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    text = _SPACES.sub(" ", text).strip()
    return f"{category}:{text}"[:MAX_SIGNATURE_CHARS]


def _bounded(text: str | bytes) -> str:
    # Bytes from a broken pipe or a binary log are decoded, never rejected.
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        text = str(text)
    if len(text) > MAX_TEXT_CHARS:
        # The head holds the first exception of a chain, the tail the last and its message.
        head = MAX_TEXT_CHARS // 5
        text = text[:head] + "\n" + text[-(MAX_TEXT_CHARS - head) :]
    return text


def strip_colours(text: str) -> str:
    """Return `text` without terminal colour codes and control bytes (newlines and tabs stay)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def _clean(text: str) -> list[tuple[str, str]]:
    """Return (line, kind) pairs: the line without log prefixes; kind frame, code or text."""
    text = strip_colours(text.replace("\r\n", "\n").replace("\r", "\n"))
    raw = text.split("\n")
    if len(raw) > MAX_LINES:
        raw = raw[: MAX_LINES // 5] + raw[-(MAX_LINES - MAX_LINES // 5) :]
    return [_clean_line(line[:MAX_LINE_CHARS]) for line in raw]


def split_prefix(line: str) -> tuple[str, str]:
    """Return (prefixes, message) of one line; the message keeps its indentation."""
    rest = line
    for _ in range(8):
        match = _PREFIX.match(rest)
        if match is None or match.end() == 0:
            break
        rest = rest[match.end() :]
    return line[: len(line) - len(rest)], rest


def strong_category(line: str, min_weight: int = STRONG_WEIGHT) -> Category | None:
    """Return the category of the strongest rule one line matches, if it weighs min_weight."""
    best: _Rule | None = None
    for rule in RULES:
        stronger = best is None or rule.weight > best.weight
        if rule.weight >= min_weight and stronger and rule.pattern.search(line):
            best = rule
    return best.category if best else None


def _clean_line(line: str) -> tuple[str, str]:
    line = split_prefix(line)[1].rstrip(_TRAILING_BORDER)
    if _FRAME.match(line):
        return line, "frame"
    if _CODE.match(line):
        return line, "code"
    return line, "text"


def _strongest(lines: list[tuple[str, str]], joined: str) -> _Evidence | None:
    starts = list(itertools.accumulate((len(line) + 1 for line, _ in lines), initial=0))
    best: _Evidence | None = None
    for rule in RULES:
        for match in itertools.islice(rule.pattern.finditer(joined), MATCHES_PER_RULE):
            index = bisect.bisect_right(starts, match.start()) - 1
            found = _weigh(rule, lines[index][1], index, match.start() - starts[index])
            if found is not None and _beats(found, best):
                best = found
    return best


def _weigh(rule: _Rule, kind: str, index: int, start: int) -> _Evidence | None:
    if kind == "frame":
        return None
    weight = rule.weight - (CODE_LINE_PENALTY if kind == "code" else 0)
    return _Evidence(weight, index, start, rule.category) if weight > 0 else None


def _beats(found: _Evidence, best: _Evidence | None) -> bool:
    if best is None or found.weight != best.weight:
        return best is None or found.weight > best.weight
    return found.line < best.line


def _message(line: str, start: int) -> str:
    line = line.strip()
    if len(line) <= MAX_MESSAGE_CHARS:
        return line
    # A run-on line (logs pasted without newlines): keep a window around the match,
    # starting at a word.
    begin = max(0, start - MAX_MESSAGE_CHARS // 3)
    if begin and (space := line.find(" ", begin, start)) != -1:
        begin = space + 1
    return line[begin : begin + MAX_MESSAGE_CHARS].strip()


def _unmatched(lines: list[tuple[str, str]]) -> Classification:
    """Return OTHER with the best line there is: the last exception line, else the first line
    of text, else the first line at all (a traceback cut short has only frames and code)."""
    texts = [line.strip() for line, kind in lines if kind == "text" and line.strip()]
    exceptions = [t for t in texts if _EXCEPTION_AT_START.match(t)]
    anything = [line.strip() for line, _ in lines if line.strip()]
    message = _message((exceptions[-1:] or texts[:1] or anything[:1] or [""])[0], 0)
    fields = _fields(Category.OTHER, message, "")
    return Classification(Category.OTHER, message, signature(Category.OTHER, message), fields)


# Field extraction: the common fields first, then the ones of the category.


def _fields(category: Category, message: str, text: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if exception := _exception(message):
        found["exception"] = exception
    _put(found, "errno", _errno(message) or _errno(text))
    _put(found, "signal", _signal(text))
    extractor = _EXTRACTORS.get(category)
    if extractor is not None:
        extractor(found, message, text)
    return found


def _put(found: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and key not in found:
        found[key] = value


def _first(pattern: str, *texts: str) -> str | None:
    for text in texts:
        if match := re.search(pattern, text):
            return match.group(1)
    return None


def _int(pattern: str, *texts: str) -> int | None:
    value = _first(pattern, *texts)
    return int(value) if value is not None and value.isdigit() else None


def _bytes(pattern: str, *texts: str) -> int | None:
    for text in texts:
        if match := re.search(pattern, text):
            return _to_bytes(match.group(1), match.group(2))
    return None


def _to_bytes(number: str, unit: str) -> int | None:
    try:
        return int(float(number) * _UNITS[unit.replace("i", "").upper()])
    except (ValueError, KeyError):
        return None


def _exception(message: str) -> str | None:
    match = _EXCEPTION_AT_START.match(message) or _EXCEPTION_ANYWHERE.search(message)
    return match.group(1) if match else None


_ERRNO_PHRASES = (
    ("no space left on device", "ENOSPC"),
    ("storagefull", "ENOSPC"),
    ("too many open files", "EMFILE"),
    ("address already in use", "EADDRINUSE"),
    ("cannot assign requested address", "EADDRNOTAVAIL"),
    ("connection refused", "ECONNREFUSED"),
    ("cannot allocate memory", "ENOMEM"),
    ("disk quota exceeded", "EDQUOT"),
)


def _errno(text: str) -> str | None:
    if name := _first(
        r"\b(E(?:ADDRINUSE|ADDRNOTAVAIL|NOSPC|MFILE|NFILE|NOMEM|CONNREFUSED))\b", text
    ):
        return name
    if number := _int(r"\[Errno (\d{1,4})\]", text):
        return errno.errorcode.get(number)
    lowered = text.lower()
    return next((name for phrase, name in _ERRNO_PHRASES if phrase in lowered), None)


def _signal(text: str) -> str | None:
    if re.search(r"(?i)\bBus error\b|\bSIGBUS\b", text):
        return "SIGBUS"
    killed = r"(?:^|[\]\s])Killed\s*$|\bSIGKILL\b|(?i:exit ?code\s{0,4}:?\s{0,4}-9\b)|code:? 137\b"
    if re.search(killed, text, re.M):
        return "SIGKILL"
    if re.search(r"(?i)Segmentation fault|\bSIGSEGV\b", text):
        return "SIGSEGV"
    return None


def _oom_fields(found: dict[str, Any], message: str, text: str) -> None:
    _put(found, "gpu", _int(r"GPU (\d{1,3}) has a total capac", message, text))
    _put(found, "gpu", _int(r"(?i)on device cuda:(\d{1,3})", message, text))
    _put(found, "requested_bytes", _bytes(r"Tried to allocate " + _SIZE, message, text))
    _put(found, "total_bytes", _bytes(r"total capac\w{0,5} of " + _SIZE, message, text))
    _put(found, "free_bytes", _bytes(r"of which " + _SIZE + " (?:is )?free", message, text))
    device = re.search(r"(?i)on device cuda:\d+ \(([\d.]+)/([\d.]+) ([KMGT]i?B)\)", text)
    if device:
        _put(found, "free_bytes", _to_bytes(device.group(1), device.group(3)))
        _put(found, "total_bytes", _to_bytes(device.group(2), device.group(3)))
    if re.search(r"(?i)GPU memory utilization", message):
        _put(found, "config_key", "gpu_memory_utilization")


def _kv_cache_fields(found: dict[str, Any], message: str, text: str) -> None:
    _put(found, "max_model_len", _int(r"(?i)max seq len \((\d+)\)", message, text))
    _put(found, "kv_cache_tokens", _int(r"(?i)stored in KV cache \((\d+)\)", message, text))
    estimate = _int(r"(?i)estimated maximum model length is (\d+)", message, text)
    _put(found, "estimated_max_model_len", estimate)
    key = "max_model_len" if re.search(r"(?i)max seq len", message) else "gpu_memory_utilization"
    _put(found, "config_key", key)


_CONFIG_KEYS = (
    (r"(?i)max_model_len|max seq len|max-model-len", "max_model_len"),
    (r"(?i)tensor[ _-]parallel|attention heads", "tensor_parallel_size"),
    (r"(?i)pipeline[ _-]parallel", "pipeline_parallel_size"),
    (r"(?i)bfloat16|float16|\bdtype\b", "dtype"),
    (r"(?i)quantization", "quantization"),
    (r"(?i)gpu[ _-]memory[ _-]utilization", "gpu_memory_utilization"),
    (r"(?i)max_num_seqs|max-num-seqs", "max_num_seqs"),
    (r"(?i)max_num_batched_tokens|max-num-batched-tokens", "max_num_batched_tokens"),
)


def _config_fields(found: dict[str, Any], message: str, text: str) -> None:
    if argument := _first(r"argument --([\w-]{1,60})", message, text):
        found.setdefault("config_key", argument.replace("-", "_"))
    # The setting named first is the one at fault: "max_num_batched_tokens (2048) is smaller
    # than max_model_len (8192)".
    named = [(m.start(), key) for p, key in _CONFIG_KEYS if (m := re.search(p, message))]
    if named:
        _put(found, "config_key", min(named)[1])
    _put(found, "max_model_len", _int(r"(?i)User-specified max_model_len \((\d+)\)", message))


def _nccl_fields(found: dict[str, Any], message: str, text: str) -> None:
    _put(found, "nccl_op", _first(r"OpType=(\w+)", message, text))
    ops = re.findall(r"\b(nccl[A-Z][A-Za-z]{2,40})\b", text)
    _put(found, "nccl_op", next((op for op in ops if not op.endswith("Error")), None))
    _put(found, "timeout_ms", _int(r"Timeout\(ms\)=(\d+)", message, text))
    error = r"NCCL error:\s*([a-z][^({\n,]{1,80}?)\s*(?:\(|,|$)"
    _put(found, "nccl_error", _first(error, message, text))


def _hang_fields(found: dict[str, Any], message: str, text: str) -> None:
    _put(found, "rpc_method", _first(r"RPC call to (\w+) timed out", message, text))
    _put(found, "timeout_s", _int(r"found in (\d+) seconds?", message))
    _put(found, "timeout_s", _int(r"Waited (\d+) ?s\b", message, text))


def _xid_fields(found: dict[str, Any], message: str, text: str) -> None:
    _put(found, "xid", _int(r"(?i)\bXid\b(?: \([^)\n]{0,40}\))?:? {0,3}(\d{1,3})\b", message, text))
    _put(found, "pci_bus_id", _first(r"(?i)\bPCI:([0-9a-f:.]{7,20})\)", message, text))
    _put(found, "gpu", _int(r"\bGPU (\d{1,3})\b", message))


def _model_load_fields(found: dict[str, Any], message: str, text: str) -> None:
    _put(found, "http_status", _int(r"\b(4\d\d) Client Error", message, text))
    repo = r"huggingface\.co/([\w.-]{1,96}/[\w.-]{1,96}?)(?:/resolve|\.?\s|\.?$)"
    _put(found, "repo", _first(repo, text))
    _put(found, "repo", _first(r"(?:Access to model|Repo model) (\S{1,200}) is", text))
    _put(found, "architecture", _first(r"Model architectures? \['([^']{1,120})'", message, text))


def _request_fields(found: dict[str, Any], message: str, text: str) -> None:
    _put(
        found,
        "http_status",
        _int(r"(?i)(?:Error code: |'code': |\"code\": ?)(\d{3})", message, text),
    )
    _put(found, "max_context_tokens", _int(r"maximum context length is (\d+)", message, text))
    _put(found, "requested_tokens", _int(r"you requested (\d+) tokens", message, text))
    _put(found, "prompt_tokens", _int(r"(?:prompt \(length |prompt contains )(\d+)", message))
    _put(found, "max_model_len", _int(r"maximum model length of (\d+)", message, text))


def _network_fields(found: dict[str, Any], message: str, text: str) -> None:
    port = r"bind on address \([^)\n]{0,80}?, (\d{2,5})\b"
    _put(found, "port", _int(port, message, text))
    _put(found, "port", _int(r"(?i)\bport[ =:]{1,3}(\d{2,5})\b", message))


_EXTRACTORS = {
    Category.CUDA_OOM: _oom_fields,
    Category.KV_CACHE_EXHAUSTED: _kv_cache_fields,
    Category.CONFIG_ERROR: _config_fields,
    Category.NCCL_ERROR: _nccl_fields,
    Category.WORKER_TIMEOUT_OR_HANG: _hang_fields,
    Category.CUDA_ILLEGAL_ACCESS_OR_XID: _xid_fields,
    Category.MODEL_LOAD_ERROR: _model_load_fields,
    Category.TOKENIZER_OR_REQUEST_ERROR: _request_fields,
    Category.NETWORK_OR_PORT: _network_fields,
}
