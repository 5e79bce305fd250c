"""Turn vLLM's output, line by line, into classified ErrorEvents: one per error, not one per line.

vLLM writes an error as a record of many lines: a logged message and its traceback, each line
with the same `(Process pid=N) ERROR MM-DD HH:MM:SS [file.py:line] ` prefix, or a raw Python
traceback on stderr, chained with "The above exception was the direct cause of ...". Several
processes (APIServer, EngineCore, one Worker per GPU) write at once, so their lines interleave.

The monitor keeps one open record per process (the `(...)` tag of the prefix):

1. `feed(line)` appends the line to its process's open record when it continues it (same
   prefix, a traceback frame or source line, a chain marker, the exception line, a few lines
   of message after it), or closes that record and maybe opens a new one. A line opens a record
   when it is an ERROR/CRITICAL line, a traceback, an exception line, strong evidence on its own
   ("Killed", "Bus error", an NCCL watchdog line), or one of the INFO/WARNING lines that signal a
   failure (FAILURE_SIGNALS). The same message again, alone, only counts a repeat.
2. A record closes when a line of its process does not continue it, or at `flush(now)` once no
   line came for `quiet_s`. Closing classifies it (agent/exceptions.py; identical texts are
   classified once per interval) and adds it to the interval's pending events by signature.
3. `flush(now)` numbers the pending events in the EventLog and returns them, oldest first.
   Identical errors in one interval are one event with a count; a repeat in a later interval is
   a new event with its own count (the control plane merges episodes).

Memory is bounded: lines per record, characters per line and per traceback, open records,
distinct pending signatures and cached classifications all have caps, so a flood of identical
lines costs one record and a counter.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from agent.checkpoint import ErrorEvent
from agent.events import EventLog
from agent.exceptions import (
    Classification,
    classify,
    split_prefix,
    strip_colours,
    strong_category,
)
from agent.loglines import LogLine

QUIET_S = 0.5  # a traceback is written at once: half a second without a line ends it
MAX_RECORD_AGE_S = 30.0  # a record still growing after this long is closed anyway
MAX_LINE_CHARS = 2_000
HEAD_LINES = 60  # a record keeps its first and last lines: the cause and the exception
TAIL_LINES = 140
MAX_TRAILING_LINES = 20  # message lines after the exception line ("CUDA kernel errors ...")
MAX_TRACEBACK_CHARS = 8_000
MAX_OPEN_RECORDS = 64
MAX_PENDING = 256  # distinct signatures per interval; more are counted in `dropped`
MAX_CACHED = 256

# INFO/WARNING lines that reference §6 names as failure signals. The shm message also fires
# harmlessly during long compiles; it is reported all the same and the tracker decides.
FAILURE_SIGNALS = re.compile(
    r"No available (?:shared memory broadcast )?block found"
    r"|is preempted by PreemptionMode"
    r"|Input prompt \(\d+ tokens\) is too long"
    r"|exceeds the capacity of block_manager"
    r"|Worker proc \S+ died"
    r"|engine core exited unexpectedly"
    r"|Failed to import from vllm\._C",
    re.IGNORECASE,
)
# ERROR lines that are context for the error that follows them, not errors themselves.
CONTEXT_LINES = re.compile(
    r"Dumping (?:input data|scheduler output|scheduler stats)|Scheduler(?:Output|Stats)\("
)
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
QUIET_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "WARN"})

_PROCESS = re.compile(r"\(([^()\n]{1,120}(?:\([^()\n]{0,40}\))?[^()\n]{0,40})\)")
_LEVEL = re.compile(r"(?<![\w\[])(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)(?=[ :])")
_TRACEBACK = "Traceback (most recent call last)"
_CHAIN = re.compile(r"\s*(The above exception was the direct cause|During handling of the above)")
_EXCEPTION_LINE = re.compile(r"(?:[A-Za-z_]\w{0,60}\.){0,6}[A-Z]\w{0,60}(?:Error|Exception)\b:")
_DIGITS = re.compile(r"\d+")


class _State(Enum):
    MESSAGE = "message"  # a logged message, maybe followed by its traceback
    TRACE = "trace"  # inside traceback frames, waiting for the exception line
    CHAINING = "chaining"  # after "The above exception was ...", a traceback follows
    AFTER = "after"  # after the exception line; a few message lines may follow


@dataclass(slots=True)
class _Line:
    prefix: str  # the log prefixes, e.g. "(EngineCore_DP0 pid=812) ERROR 11-27 10:04:31 [x.py:1] "
    message: str  # the rest, indentation kept
    level: str | None
    process: str  # the "(...)" tags, "" when the line has none


@dataclass(slots=True)
class _Record:
    process: str
    prefix: str
    level: str | None
    first_message: str
    started_at: float
    last_at: float
    state: _State = _State.MESSAGE
    head: list[str] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    omitted: int = 0
    trailing: int = 0
    repeats: int = 1  # the same single-line message again, counted instead of stored

    def add(self, text: str, at: float) -> None:
        if len(self.head) < HEAD_LINES:
            self.head.append(text)
        else:
            if len(self.tail) == self.tail.maxlen:
                self.omitted += 1
            self.tail.append(text)
        self.last_at = at

    def text(self) -> str:
        gap = [f"... {self.omitted} lines omitted ..."] if self.omitted else []
        return "\n".join([*self.head, *gap, *self.tail])


@dataclass(slots=True)
class _Pending:
    classification: Classification
    traceback: str
    count: int
    first_seen_at: float
    last_seen_at: float


class ExceptionMonitor:
    def __init__(self, events: EventLog, quiet_s: float = QUIET_S) -> None:
        self._events = events
        self.quiet_s = quiet_s
        self._open: dict[str, _Record] = {}
        self._pending: dict[str, _Pending] = {}
        self._classified: dict[str, Classification] = {}
        self.dropped = 0  # errors not reported because MAX_PENDING signatures were pending

    def feed(self, line: LogLine) -> None:
        """Take one line of vLLM's output (stdout, stderr, a log file or the journal)."""
        text = strip_colours(line.text.rstrip("\r\n"))[:MAX_LINE_CHARS]
        parsed = _split(text)
        record = self._open.get(parsed.process)
        if record is not None and line.at - record.last_at > self.quiet_s:
            self._close(parsed.process)
            record = None
        if record is not None:
            if _repeats(record, parsed):
                record.repeats += 1
                record.last_at = line.at
                return
            if _continues(record, parsed):
                record.add(text, line.at)
                return
            self._close(parsed.process)
        if _opens(parsed):
            self._start(parsed, text, line.at)

    def flush(self, now: float) -> list[ErrorEvent]:
        """Close the records that went quiet, add this interval's errors to the EventLog."""
        for process, record in list(self._open.items()):
            quiet = now - record.last_at >= self.quiet_s
            if quiet or now - record.started_at >= MAX_RECORD_AGE_S:
                self._close(process)
        pending = sorted(self._pending.values(), key=lambda p: p.first_seen_at)
        self._pending.clear()
        self._classified.clear()
        return [self._events.add(_event(p)) for p in pending]

    def _start(self, parsed: _Line, text: str, at: float) -> None:
        if len(self._open) >= MAX_OPEN_RECORDS:
            oldest = min(self._open.values(), key=lambda r: r.last_at)
            self._close(oldest.process)
        record = _Record(parsed.process, parsed.prefix, parsed.level, parsed.message, at, at)
        if _TRACEBACK in parsed.message:
            record.state = _State.TRACE
        elif _EXCEPTION_LINE.match(parsed.message):
            record.state = _State.AFTER  # an exception printed alone; its message may go on
        record.add(text, at)
        self._open[parsed.process] = record

    def _close(self, process: str) -> None:
        record = self._open.pop(process)
        text = record.text()
        classification = self._classify(text)
        pending = self._pending.get(classification.signature)
        if pending is not None:
            pending.count += record.repeats
            pending.last_seen_at = max(pending.last_seen_at, record.last_at)
        elif len(self._pending) < MAX_PENDING:
            self._pending[classification.signature] = _Pending(
                classification, _bounded(text), record.repeats, record.started_at, record.last_at
            )
        else:
            self.dropped += record.repeats

    def _classify(self, text: str) -> Classification:
        # A flood of one error with other numbers in it is classified once per interval.
        key = _DIGITS.sub("0", text)
        cached = self._classified.get(key)
        if cached is None:
            cached = classify(text)
            if len(self._classified) < MAX_CACHED:
                self._classified[key] = cached
        return cached


def _split(text: str) -> _Line:
    prefix, message = split_prefix(text)
    level = _LEVEL.search(prefix)
    name = _level(level.group(1)) if level else None
    # Editors and log shippers drop trailing spaces: "[core.py:708] " and "[core.py:708]"
    # are one prefix.
    return _Line(prefix.rstrip(), message, name, "|".join(_PROCESS.findall(prefix)))


def _level(name: str) -> str:
    return "WARNING" if name == "WARN" else name


def _opens(line: _Line) -> bool:
    message = line.message.strip()
    if not message or CONTEXT_LINES.match(message):
        return False
    if line.level in ERROR_LEVELS:
        return True
    if line.level in QUIET_LEVELS:
        return FAILURE_SIGNALS.search(message) is not None
    return (
        _TRACEBACK in message
        or _EXCEPTION_LINE.match(message) is not None
        or strong_category(message) is not None
    )


def _repeats(record: _Record, line: _Line) -> bool:
    """True when a single-line record's message comes again (a flood, a periodic warning)."""
    single = not record.head[1:] and record.state is _State.MESSAGE
    return single and line.level == record.level and line.message == record.first_message


def _continues(record: _Record, line: _Line) -> bool:
    """True when `line` belongs to `record`: its traceback, chain or message lines."""
    if line.level in QUIET_LEVELS:
        return False
    message = line.message
    if _TRACEBACK in message:
        return _enters_traceback(record, line)
    if line.prefix != record.prefix:
        return False
    if not message.strip() or message[:1].isspace():
        return True
    if _CHAIN.match(message):
        record.state = _State.CHAINING
        return True
    return _takes_message_line(record)


def _enters_traceback(record: _Record, line: _Line) -> bool:
    # A logged message is followed by its traceback, which may be printed without the prefix
    # ("ERROR:    Exception in ASGI application", then a raw traceback).
    if record.state is _State.CHAINING or (record.state is _State.MESSAGE and not record.trailing):
        record.state = _State.TRACE
        record.prefix = line.prefix
        return True
    return False


def _takes_message_line(record: _Record) -> bool:
    if record.state in (_State.TRACE, _State.CHAINING):
        record.state = _State.AFTER  # the exception line ends the frames
        return True
    if record.state is _State.MESSAGE and not record.prefix:
        return False  # a raw line alone ("Killed"): the raw lines after it are not part of it
    if record.trailing < MAX_TRAILING_LINES:
        record.trailing += 1
        return True
    return False


def _bounded(text: str) -> str:
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    head = MAX_TRACEBACK_CHARS // 4
    return f"{text[:head]}\n...\n{text[-(MAX_TRACEBACK_CHARS - head) :]}"


def _event(pending: _Pending) -> ErrorEvent:
    result = pending.classification
    return ErrorEvent(
        category=result.category.value,
        message=result.message,
        count=pending.count,
        first_seen_at=pending.first_seen_at,
        last_seen_at=pending.last_seen_at,
        signature=result.signature,
        traceback=pending.traceback,
        fields=dict(result.fields),
    )
