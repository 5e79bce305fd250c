"""Where vLLM's output comes from, and how it reaches whoever reads it.

`LogFanout` hands every LogLine to its subscribers, in order:

    unsubscribe = logs.subscribe(tracker.feed)       # a callback, called in the event loop
    async for line in logs.lines(): ...             # or an async iterator (bounded queue)

Sources publish into it: the supervisor's pipes (agent/supervisor.py), `FileTail` (a log file
followed like `tail -F`: across rotation and truncation) and `CommandLines` (the output of a
command such as `journalctl -f -o cat -u vllm`, run without a shell and restarted if it ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from agent.clock import SYSTEM_CLOCK, Clock
from agent.loglines import LogLine

log = logging.getLogger(__name__)

AGENT_PREFIX = "sentinel-agent: "
KEEP_RECENT = 200
MAX_LINE_BYTES = 16 * 1024  # a longer line (a huge traceback frame) is cut into pieces
READ_CHUNK = 64 * 1024
POLL_S = 0.25
COMMAND_RESTART_S = 5.0
_NEWLINES = re.compile(rb"\r\n|\r|\n")  # tqdm redraws its progress bars with a bare \r

Subscriber = Callable[[LogLine], None]


class LogFanout:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock  # stamps the lines its sources read (LogLine.at)
        self._subscribers: list[Subscriber] = []
        self.recent: deque[LogLine] = deque(maxlen=KEEP_RECENT)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback` with every line from now on; return a function that stops it."""
        self._subscribers.append(callback)
        return lambda: self._unsubscribe(callback)

    def publish(self, line: LogLine) -> None:
        self.recent.append(line)
        for callback in list(self._subscribers):
            # One failing subscriber must not cost the others their lines.
            try:
                callback(line)
            except Exception:
                log.exception("a log subscriber failed on %r", line.text[:200])

    def say(self, text: str) -> None:
        """Publish one of the agent's own lines (stream "agent")."""
        self.publish(LogLine(at=self.clock.time(), text=AGENT_PREFIX + text, stream="agent"))

    async def lines(self, max_queued: int = 10_000) -> AsyncIterator[LogLine]:
        """Yield every line from now on; a reader that falls `max_queued` behind loses lines."""
        queue: asyncio.Queue[LogLine] = asyncio.Queue(max_queued)

        def put(line: LogLine) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(line)

        unsubscribe = self.subscribe(put)
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()

    def _unsubscribe(self, callback: Subscriber) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(callback)


class LineSplitter:
    """Cut a byte stream into text lines; empty lines are dropped (they say nothing)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[str]:
        parts = _NEWLINES.split(self._rest + data)
        self._rest = parts.pop()
        while len(self._rest) > MAX_LINE_BYTES:
            parts.append(self._rest[:MAX_LINE_BYTES])
            self._rest = self._rest[MAX_LINE_BYTES:]
        return [p.decode("utf-8", "replace") for p in parts if p]

    def flush(self) -> list[str]:
        rest, self._rest = self._rest, b""
        return [rest.decode("utf-8", "replace")] if rest else []


async def pump(reader: asyncio.StreamReader, logs: LogFanout, stream: str) -> None:
    """Publish every line `reader` yields until its end."""
    splitter = LineSplitter()
    while data := await reader.read(READ_CHUNK):
        _publish(logs, splitter.feed(data), stream)
    _publish(logs, splitter.flush(), stream)


def _publish(logs: LogFanout, texts: list[str], stream: str) -> None:
    now = logs.clock.time()
    for text in texts:
        logs.publish(LogLine(at=now, text=text, stream=stream))


def journal_argv(unit: str) -> list[str]:
    """Return the journalctl argv that follows `unit`'s messages as vLLM wrote them."""
    return ["journalctl", "--follow", "--output=cat", "--lines=0", f"--unit={unit}"]


class FileTail:
    """Follow a file like `tail -F`: new lines only, across rotation and truncation.

    Polling, not inotify: it works on every filesystem and costs one stat() per poll.
    """

    def __init__(self, path: Path, logs: LogFanout, *, poll_s: float = POLL_S) -> None:
        self.path = path
        self.logs = logs
        self.poll_s = poll_s
        self._file: BinaryIO | None = None
        self._splitter = LineSplitter()
        self._opened_before = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.poll()  # the first poll skips what the file already holds
        self._task = asyncio.create_task(self._run(), name=f"tail {self.path}")

    async def close(self) -> None:
        await _cancel(self._task)
        if self._file is not None:
            self._file.close()
            self._file = None

    def poll(self) -> None:
        """Publish what was appended since the last poll; follow a rotated or truncated file."""
        if self._file is None and not self._open():
            return
        self._read_available()
        self._follow_rotation()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                self.poll()
            except OSError as exc:
                log.warning("cannot read %s: %s", self.path, exc)

    def _open(self) -> bool:
        try:
            self._file = self.path.open("rb")
        except FileNotFoundError:
            self._opened_before = True  # whatever appears later is new: read it whole
            return False
        if not self._opened_before:
            self._file.seek(0, os.SEEK_END)
            self._opened_before = True
        return True

    def _read_available(self) -> None:
        assert self._file is not None
        while data := self._file.read(READ_CHUNK):
            _publish(self.logs, self._splitter.feed(data), "file")

    def _follow_rotation(self) -> None:
        assert self._file is not None
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return  # rotated away, the new file not there yet: keep the old one open
        held = os.fstat(self._file.fileno())
        if (on_disk.st_ino, on_disk.st_dev) != (held.st_ino, held.st_dev):
            _publish(self.logs, self._splitter.flush(), "file")
            self._file.close()
            self._file = None
            self._open()
            self._read_available()
        elif on_disk.st_size < self._file.tell():  # truncated in place (copytruncate)
            self._file.seek(0)
            self._read_available()


class CommandLines:
    """Publish the output lines of a long-running command (journalctl); restart it if it ends."""

    def __init__(
        self,
        argv: list[str],
        logs: LogFanout,
        *,
        stream: str = "journal",
        restart_s: float = COMMAND_RESTART_S,
    ) -> None:
        self.argv = argv
        self.logs = logs
        self.stream = stream
        self.restart_s = restart_s
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lines of {self.argv[0]}")

    async def close(self) -> None:
        await _cancel(self._task)
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def _run(self) -> None:
        while True:
            code = await self._follow_once()
            self.logs.say(f"{self.argv[0]} ended ({code}); following again in {self.restart_s:g} s")
            await asyncio.sleep(self.restart_s)

    async def _follow_once(self) -> str:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            return f"cannot run it: {exc.strerror or exc}"
        assert self._proc.stdout is not None
        await pump(self._proc.stdout, self.logs, self.stream)
        return f"exit code {await self._proc.wait()}"


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
