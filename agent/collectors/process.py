"""Measure the vLLM process tree with psutil: the API server and its children (EngineCore,
workers).

`rss_bytes`, `cpu_pct`, `open_fds` and `threads` are summed over the tree (shared pages are
counted once per process, as `ps` does). `cpu_pct` comes from the CPU-time difference between
two collections of the processes present in both, so a child found late adds no spike;
100 means one core. `uptime_s` is the root's.

Only these members of a process object are used (the simulator's fake has exactly these):
`.pid`, `.oneshot()`, `.memory_info().rss`, `.cpu_times()` (.user, .system), `.num_fds()`,
`.num_threads()`, `.create_time()`, `.children(recursive=True)`, `.is_running()`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import psutil

from agent.checkpoint import Process

# Listing children scans every process on the host (a few ms), and vLLM's tree is stable
# once started, so the list is refreshed this often, or sooner when a member is gone.
CHILDREN_REFRESH_S = 10.0
# Finding the process by its listening port scans every socket (about 10 ms); when there is
# none to find (vLLM down or still starting), look again only this often.
PID_LOOKUP_EVERY_S = 10.0


@dataclass(slots=True)
class _Usage:
    rss_bytes: float = 0.0
    open_fds: int = 0
    threads: int = 0
    cpu_s: dict[int, float] = field(default_factory=dict)


class ProcessCollector:
    def __init__(self, source: Any | None, *, pid: int | None, port: int | None) -> None:
        self._fixed_source = source is not None
        self._proc: Any | None = source
        self._pid = pid
        self._port = port
        self._looked_up_at: float | None = None
        self._children: list[Any] = []
        self._children_at: float | None = None
        self._cpu_before: tuple[dict[int, float], float] | None = None
        self.alive: bool | None = None  # None: no vLLM process known to watch

    async def collect(self, now: float, wall_now: float) -> tuple[Process | None, str | None]:
        """Return the tree's usage, or None and why (monotonic `now`, epoch `wall_now`)."""
        proc, reason = await self._process(now)
        if proc is None:
            return None, reason
        try:
            measured = self._measure(proc, now, wall_now)
        except psutil.NoSuchProcess:
            return None, self._gone(proc)
        except psutil.Error as exc:
            return None, f"cannot read vLLM process {proc.pid}: {exc}"
        self.alive = True
        return measured, None

    async def _process(self, now: float) -> tuple[Any | None, str | None]:
        if self._proc is not None and not self._proc.is_running():
            return None, self._gone(self._proc)
        if self._proc is None:
            self._proc = await self._find(now)
        if self._proc is None:
            return None, self._not_found_reason()
        return self._proc, None

    def _gone(self, proc: Any) -> str:
        self.alive = False
        if not self._fixed_source:
            self._proc = None
        self._children, self._children_at, self._cpu_before = [], None, None
        return f"vLLM process {proc.pid} is gone"

    async def _find(self, now: float) -> Any | None:
        if self._fixed_source:
            return None
        if self._looked_up_at is not None and now - self._looked_up_at < PID_LOOKUP_EVERY_S:
            return None
        self._looked_up_at = now
        pid = self._pid
        if pid is None and self._port is not None:
            pid = await asyncio.to_thread(find_listening_pid, self._port)
        if pid is None:
            return None
        try:
            return psutil.Process(pid)
        except psutil.Error:
            return None

    def _not_found_reason(self) -> str:
        if self._pid is not None:
            self.alive = False
            return f"no process with pid {self._pid}"
        if self._port is not None:
            return (
                f"no process of this user listens on port {self._port} "
                "(vLLM down or starting; pass --vllm-pid to watch it while it starts)"
            )
        return "no vLLM pid given and no port to find it by"

    def _measure(self, root: Any, now: float, wall_now: float) -> Process:
        children = self._tree_children(root, now)
        usage = _Usage()
        with root.oneshot():
            _add(usage, root)
            uptime_s = max(wall_now - root.create_time(), 0.0)
        for child in children:
            try:
                with child.oneshot():
                    _add(usage, child)
            except psutil.NoSuchProcess:
                self._children_at = None  # refresh the list next time
        return Process(
            pid=root.pid,
            rss_bytes=usage.rss_bytes,
            cpu_pct=self._cpu_pct(usage.cpu_s, now),
            open_fds=usage.open_fds,
            threads=usage.threads,
            children=len(children),
            uptime_s=uptime_s,
        )

    def _tree_children(self, root: Any, now: float) -> list[Any]:
        stale = self._children_at is None or now - self._children_at >= CHILDREN_REFRESH_S
        if stale or not all(child.is_running() for child in self._children):
            self._children = list(root.children(recursive=True))
            self._children_at = now
        return self._children

    def _cpu_pct(self, cpu_s: dict[int, float], now: float) -> float | None:
        before, self._cpu_before = self._cpu_before, (cpu_s, now)
        if before is None or now <= before[1]:
            return None
        used = sum(max(t - before[0][pid], 0.0) for pid, t in cpu_s.items() if pid in before[0])
        return 100.0 * used / (now - before[1])


def _add(usage: _Usage, proc: Any) -> None:
    times = proc.cpu_times()
    usage.rss_bytes += proc.memory_info().rss
    usage.open_fds += proc.num_fds()
    usage.threads += proc.num_threads()
    usage.cpu_s[proc.pid] = times.user + times.system


def find_listening_pid(port: int) -> int | None:
    """Return the pid of the process listening on TCP `port`, if this user can see it."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in connections:
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr
        if listening and conn.laddr.port == port and conn.pid is not None:
            return int(conn.pid)
    return None
