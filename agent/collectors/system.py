"""Measure the machine vLLM runs on: its memory and the filesystems it writes to.

Memory: psutil's total and available RAM. Inside a cgroup whose memory limit is below the RAM
(a container), the limit is the total and what the cgroup may still use is the available:
the kernel's OOM killer acts there, whatever the host has free.

Disks: the filesystem of each watched path (statvfs, through psutil.disk_usage), once per
filesystem: the root disk and the model cache are often one. A path that does not exist (a
cache not made yet) is left out until it does.

The source is psutil itself, or anything with the same `virtual_memory()` and
`disk_usage(path)` (the simulator's machine). A real statvfs can hang on a dead network
mount: the real source is read in a thread, and while one read hangs no other starts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from agent.checkpoint import Disk, System

READ_TIMEOUT_S = 2.0
CGROUP = Path("/sys/fs/cgroup")


def default_paths(environ: dict[str, str] | None = None) -> list[str]:
    """Return where vLLM writes: the root disk, shared memory (tensor-parallel workers talk
    through it), the Hugging Face and vLLM caches (weights, compiled graphs) and /tmp."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME", "~")).expanduser()
    hf = env.get("HF_HOME") or str(home / ".cache" / "huggingface")
    vllm = env.get("VLLM_CACHE_ROOT") or str(home / ".cache" / "vllm")
    return ["/", "/dev/shm", hf, vllm, "/tmp"]


class SystemCollector:
    def __init__(self, source: Any | None = None, paths: Sequence[str] = ()) -> None:
        self._real = source is None
        self._source = psutil if source is None else source
        self._paths = list(paths) if paths else default_paths()
        self._cgroup = cgroup_files() if self._real else None
        self._reading: asyncio.Future[System] | None = None

    async def collect(self) -> tuple[System | None, str | None]:
        """Return the machine's memory and disks, or None and why."""
        if not self._real:
            return self.read(), None
        if self._reading is not None and not self._reading.done():
            return None, "still waiting for the previous read (a filesystem is not answering)"
        self._reading = asyncio.ensure_future(asyncio.to_thread(self.read))
        try:
            # shield: on a timeout the read goes on in its thread; the next collect sees it.
            return await asyncio.wait_for(asyncio.shield(self._reading), READ_TIMEOUT_S), None
        except TimeoutError:
            return None, f"no answer in {READ_TIMEOUT_S:g} s (a filesystem is not answering)"

    def read(self) -> System:
        memory = self._source.virtual_memory()
        total, available = float(memory.total), float(memory.available)
        if self._cgroup is not None:
            total, available = within_cgroup(total, available, *self._cgroup)
        return System(
            memory_total_bytes=total, memory_available_bytes=available, disks=self._disks()
        )

    def _disks(self) -> list[Disk]:
        disks, seen = [], set()
        for path in self._paths:
            try:
                device = os.stat(path).st_dev if self._real else path
                if device in seen:
                    continue
                usage = self._source.disk_usage(path)
            except OSError:
                continue
            seen.add(device)
            disks.append(
                Disk(
                    path=path,
                    total_bytes=float(usage.total),
                    used_bytes=float(usage.used),
                    free_bytes=float(usage.free),
                )
            )
        return disks


def cgroup_files(root: Path = CGROUP) -> tuple[Path, Path] | None:
    """Return this process's cgroup memory limit and usage files, v2 or v1, if it has them
    (found once: which files a cgroup has does not change while the agent runs)."""
    for limit, usage in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        if (root / limit).is_file() and (root / usage).is_file():
            return root / limit, root / usage
    return None


def within_cgroup(
    total: float, available: float, limit_file: Path, usage_file: Path
) -> tuple[float, float]:
    """Return (total, available) capped by the cgroup's memory limit, when it sets one."""
    try:
        limit_text = limit_file.read_text().strip()
        if limit_text == "max":
            return total, available
        limit, usage = float(limit_text), float(usage_file.read_text().strip())
    except (OSError, ValueError):
        return total, available
    if limit >= total:  # v1 writes a huge number for "no limit"
        return total, available
    return limit, max(min(available, limit - usage), 0.0)
