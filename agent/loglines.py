"""One line of vLLM's output, and the parts of vLLM's log prefix.

vLLM logs `LEVEL MM-DD HH:MM:SS [file.py:line] message`, prefixed by the process, e.g.
`(EngineCore_DP0 pid=812) ERROR 11-27 10:04:31 [core.py:708] EngineCore failed to start.`
Tracebacks, tqdm progress bars and uvicorn lines (`INFO:     Started server process`) come
without that prefix. Match on the message, never on the file or line number: they change
every release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PREFIX = re.compile(
    r"^(?:\((?P<process>[A-Za-z][\w-]*)(?:\s+rank=\d+)?(?:\s+pid=(?P<pid>\d+))?\)\s+)?"
    r"(?P<level>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\s+"
    r"(?P<time>\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\s+"
    r"(?:\[(?P<source>[^\]]+)\]\s+)?(?P<message>.*)$"
)
_UVICORN = re.compile(r"^(?P<level>INFO|WARNING|ERROR|CRITICAL):\s+(?P<message>.*)$")
_PROCESS_ONLY = re.compile(
    r"^\((?P<process>[A-Za-z][\w-]*)(?:\s+rank=\d+)?(?:\s+pid=(?P<pid>\d+))?\)\s+(?P<message>.*)$"
)


@dataclass(frozen=True, slots=True)
class LogLine:
    at: float  # epoch seconds when the agent read it
    text: str  # the line as written, without its newline
    stream: str = "stdout"  # "stdout", "stderr", "file", "journal"


@dataclass(frozen=True, slots=True)
class ParsedLine:
    level: str | None  # None for lines without a level (tracebacks, progress bars)
    process: str | None  # "APIServer", "EngineCore_DP0", "Worker_TP1", ...
    pid: int | None
    message: str  # the text after the prefix (the whole line when there is none)


def parse(text: str) -> ParsedLine:
    """Return the prefix parts of a vLLM log line; lines without a prefix keep their text."""
    line = text.rstrip("\r\n")
    if match := _PREFIX.match(line):
        return ParsedLine(
            level=_level(match["level"]),
            process=match["process"],
            pid=int(match["pid"]) if match["pid"] else None,
            message=match["message"],
        )
    if match := _UVICORN.match(line):
        return ParsedLine(level=match["level"], process=None, pid=None, message=match["message"])
    if match := _PROCESS_ONLY.match(line):
        pid = int(match["pid"]) if match["pid"] else None
        return ParsedLine(level=None, process=match["process"], pid=pid, message=match["message"])
    return ParsedLine(level=None, process=None, pid=None, message=line)


def _level(level: str) -> str:
    return "WARNING" if level == "WARN" else level
