"""vLLM's log lines, in vLLM's format, kept in memory and optionally written to a file.

A line looks like `(APIServer pid=2012) INFO 11-27 10:00:00 [api_server.py:1880] message`.
vLLM's formatter repeats the prefix on every line of a multi-line message (tracebacks),
so each physical line of the file carries its process, level and time.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import TextIO

MAX_LINES = 4000


class VllmLog:
    def __init__(self, path: Path | None = None) -> None:
        self.lines: deque[str] = deque(maxlen=MAX_LINES)
        self.path = path
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1)

    def log(self, at: float, proc: str, level: str, where: str, message: str) -> None:
        """Write `message` as process `proc` (e.g. "APIServer pid=12") from `where` (file:line)."""
        stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(at))
        head = f"({proc}) {level} {stamp} [{where}] "
        self._write([head + line for line in message.split("\n")])

    def raw(self, proc: str, text: str) -> None:
        """Write lines that bypass vLLM's formatter: uvicorn's, tqdm progress bars."""
        self._write([f"({proc}) {line}" for line in text.split("\n")])

    def tail(self, n: int = 100) -> list[str]:
        return list(self.lines)[-n:]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, lines: list[str]) -> None:
        self.lines.extend(lines)
        if self._file is not None:
            self._file.write("\n".join(lines) + "\n")
