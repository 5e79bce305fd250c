"""The host's processes as the agent sees them: the vLLM tree it must protect, and signals.

`FollowedProcess` is the psutil-like handle the process collector reads: it follows whichever
process is vLLM now, so a restarted vLLM (a new pid) is measured without re-wiring anything.
`Signaller` is how an action signals a process listed by NVML; the simulated fleet passes
one that acts on its simulated processes, never on the machine's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, Protocol

import psutil


class FollowedProcess:
    """psutil.Process's calls on the process `current_pid()` names right now."""

    def __init__(self, current_pid: Callable[[], int | None]) -> None:
        self._current_pid = current_pid
        self._proc: psutil.Process | None = None
        self._last_pid = 0

    @property
    def pid(self) -> int:
        pid = self._current_pid()
        if pid is not None:
            self._last_pid = pid
        return self._last_pid

    def is_running(self) -> bool:
        proc = self._get()
        return proc is not None and proc.is_running()

    def oneshot(self) -> Any:
        return self._require().oneshot()

    def memory_info(self) -> Any:
        return self._require().memory_info()

    def cpu_times(self) -> Any:
        return self._require().cpu_times()

    def num_fds(self) -> Any:
        return self._require().num_fds()

    def num_threads(self) -> Any:
        return self._require().num_threads()

    def create_time(self) -> Any:
        return self._require().create_time()

    def children(self, recursive: bool = False) -> Any:
        return self._require().children(recursive=recursive)

    def _get(self) -> psutil.Process | None:
        pid = self._current_pid()
        if pid is None:
            return None
        if self._proc is None or self._proc.pid != pid:
            try:
                self._proc = psutil.Process(pid)
            except psutil.NoSuchProcess:
                return None
        return self._proc

    def _require(self) -> psutil.Process:
        proc = self._get()
        if proc is None:
            raise psutil.NoSuchProcess(self.pid)
        return proc


def tree_pids(pid: int) -> set[int]:
    """Return `pid` and its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return {pid} | {child.pid for child in root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def group_pids(pgid: int) -> set[int]:
    """Return the processes in process group `pgid`, orphans reparented to init included."""
    found = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) == pgid:
                found.add(proc.pid)
    return found


class Signaller(Protocol):
    def identity(self, pid: int) -> float | None:
        """Return what tells this process from a later one with the same pid, None if gone."""

    def signal(self, pid: int, signum: int) -> None:
        """Send `signum`; raise ProcessLookupError or PermissionError as os.kill does."""


class OsSignaller:
    """Signals real processes; identity is the start time, so a reused pid is never hit."""

    def identity(self, pid: int) -> float | None:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None  # exited; its GPU memory is already released
            return float(proc.create_time())
        except psutil.NoSuchProcess:
            return None

    def signal(self, pid: int, signum: int) -> None:
        os.kill(pid, signum)
