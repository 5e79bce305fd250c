"""Checks of the host itself: OS, RAM, /dev/shm, open files, the port, disk space."""

from __future__ import annotations

import errno
import platform
import socket
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from agent.checkpoint import ValidationCheck
from agent.checks.base import (
    GIB,
    MIB,
    Context,
    failed,
    gib,
    home_of,
    nearest_existing,
    passed,
    skipped,
    warned,
)
from agent.model_shape import hf_cache_dir

# vLLM raises its soft open-file limit to this at start (vllm.utils.set_ulimit), capped by the
# hard limit: a hard limit below it caps concurrent connections.
VLLM_NOFILE_TARGET = 65535
# NCCL and vLLM's shared-memory broadcast between workers live in /dev/shm; Docker's 64 MiB
# default fails NCCL with "unhandled system error" (reference §6).
SHM_NEEDED_FOR_TP_BYTES = 1 * GIB
HOST_BASE_BYTES = 4 * GIB  # API server, engine core and tokenizers (I)
HOST_PER_WORKER_BYTES = 2 * GIB  # each GPU worker process (I)
VLLM_CACHE_NEEDED_BYTES = 5 * GIB  # torch.compile and CUDA-graph caches (I)
DEFAULT_PORT = 8000


def check_os(ctx: Context) -> ValidationCheck:
    """vLLM's CUDA builds run on Linux; say which distribution, kernel and glibc this is."""
    kernel = _read(ctx.machine.proc / "sys/kernel/osrelease") or platform.release()
    distro = _os_release(ctx.machine.etc / "os-release")
    libc = " ".join(platform.libc_ver()).strip() or "unknown libc"
    value = f"{distro}, kernel {kernel}, {libc}"
    if not ctx.machine.platform.startswith("linux"):
        return failed(
            "os",
            f"vLLM's CUDA builds run on Linux only; this is {ctx.machine.platform}",
            value=value,
            expected="Linux",
            fix="run vLLM on a Linux host (or in a Linux container)",
        )
    if "microsoft" in kernel.lower():
        return warned(
            "os",
            "WSL2: vLLM disables pinned memory and NCCL peer-to-peer is limited",
            value=value,
            expected="native Linux",
            fix="prefer a native Linux host for production serving",
        )
    return passed("os", f"Linux: {value}", value=value, expected="Linux")


def check_host_memory(ctx: Context) -> ValidationCheck:
    """Host RAM available against what vLLM's processes and any CPU offloading take."""
    meminfo = _meminfo(ctx.machine.proc / "meminfo")
    if "MemAvailable" not in meminfo:
        return skipped("host_memory", f"cannot read MemAvailable from {ctx.machine.proc}/meminfo")
    available, total = meminfo["MemAvailable"], meminfo.get("MemTotal", 0)
    offload = _offload_bytes(ctx)
    needed = offload + HOST_BASE_BYTES + HOST_PER_WORKER_BYTES * ctx.world_size
    value = f"{gib(available)} available of {gib(total)}"
    expected = f">= {gib(needed)} ({ctx.world_size} GPU workers" + (
        f", {gib(offload)} CPU offload)" if offload else ")"
    )
    if available < offload:
        return failed(
            "host_memory",
            "not enough host RAM for the CPU offloading asked for",
            value=value,
            expected=expected,
            fix="free host memory, or lower --cpu-offload-gb / --kv-offloading-size",
        )
    if available < needed:
        return warned(
            "host_memory",
            "host RAM is tight: vLLM's processes may be OOM-killed",
            value=value,
            expected=expected,
            fix="stop other memory-hungry processes on this host",
        )
    return passed("host_memory", f"enough host RAM: {value}", value=value, expected=expected)


def _offload_bytes(ctx: Context) -> int:
    per_gpu = float(ctx.arg("cpu_offload_gb", 0) or 0) + float(ctx.arg("swap_space", 0) or 0)
    kv_offload = float(ctx.arg("kv_offloading_size", 0) or 0)
    return int((per_gpu * ctx.world_size + kv_offload) * GIB)


def check_shm(ctx: Context) -> ValidationCheck:
    """/dev/shm must hold NCCL's and vLLM's buffers when more than one GPU worker runs."""
    try:
        space = ctx.machine.disk_usage(ctx.machine.shm)
    except OSError as exc:
        if ctx.world_size > 1:
            return failed(
                "shm_size",
                f"{ctx.machine.shm} is missing: {exc}",
                expected=f">= {gib(SHM_NEEDED_FOR_TP_BYTES)}",
                fix=_SHM_FIX,
            )
        return skipped("shm_size", f"{ctx.machine.shm} is missing; one GPU worker does not need it")
    value = f"{space.total / MIB:.0f} MiB ({space.free / MIB:.0f} MiB free)"
    if ctx.world_size == 1:
        return passed("shm_size", f"{value}; with one GPU worker NCCL does not use it", value=value)
    expected = f">= {gib(SHM_NEEDED_FOR_TP_BYTES)} free for {ctx.world_size} GPU workers"
    if space.free < SHM_NEEDED_FOR_TP_BYTES:
        return failed(
            "shm_size",
            "/dev/shm is too small for tensor parallelism: NCCL will fail "
            "with 'unhandled system error'",
            value=value,
            expected=expected,
            fix=_SHM_FIX,
        )
    return passed("shm_size", value, value=value, expected=expected)


_SHM_FIX = "run the container with --ipc=host (or --shm-size=16g)"


def check_open_files(ctx: Context) -> ValidationCheck:
    """The hard open-file limit caps how many connections vLLM can hold."""
    soft, hard = ctx.machine.nofile_limits()
    value = f"soft {_limit(soft)}, hard {_limit(hard)}"
    expected = f"hard >= {VLLM_NOFILE_TARGET}"
    if hard != -1 and hard < VLLM_NOFILE_TARGET:  # -1 is RLIM_INFINITY
        return warned(
            "open_files_limit",
            f"vLLM can raise its limit only to {hard} open files: "
            "many concurrent requests will fail with 'Too many open files'",
            value=value,
            expected=expected,
            fix=f"raise the hard limit: ulimit -Hn {VLLM_NOFILE_TARGET}, systemd "
            f"LimitNOFILE={VLLM_NOFILE_TARGET}, or docker --ulimit "
            f"nofile={VLLM_NOFILE_TARGET}:{VLLM_NOFILE_TARGET}",
        )
    return passed("open_files_limit", value, value=value, expected=expected)


def _limit(n: int) -> str:
    return "unlimited" if n == -1 else str(n)


def check_port(ctx: Context) -> ValidationCheck:
    """The port vLLM will listen on must be free before it starts."""
    if ctx.command is None:
        return skipped("port", "no vLLM command: vLLM runs elsewhere and holds its port")
    if ctx.arg("uds"):
        return skipped("port", f"vLLM listens on the unix socket {ctx.arg('uds')}")
    host = str(ctx.arg("host") or "")
    port = int(ctx.arg("port") or urlsplit(ctx.vllm_url).port or DEFAULT_PORT)
    where = f"{host or '*'}:{port}"
    problem = _bind_problem(host, port)
    if problem is None:
        return passed("port", f"{where} is free", value=where, expected="free")
    if problem.errno == errno.EADDRINUSE:
        holder = _holder(port)
        return failed(
            "port",
            f"{where} is already in use{holder}: vLLM would fail to bind it",
            value=f"{where} in use{holder}",
            expected="free",
            fix=f"stop the process holding port {port} (often a previous vLLM), or "
            "start vLLM with another --port and point the agent's vllm_url at it",
        )
    return failed(
        "port",
        f"cannot bind {where}: {problem.strerror}",
        value=where,
        expected="free",
        fix="choose a port this user may bind (>= 1024)",
    )


def _bind_problem(host: str, port: int) -> OSError | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # uvicorn sets SO_REUSEADDR too: a port in TIME_WAIT is free for it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def _holder(port: int) -> str:
    # Best effort: other users' sockets show no pid without privileges.
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                name = _process_name(conn.pid)
                return f" by pid {conn.pid} ({name})" if conn.pid else ""
    except (psutil.Error, OSError):
        pass
    return ""


def _process_name(pid: int | None) -> str:
    try:
        return psutil.Process(pid).name() if pid else "?"
    except psutil.Error:
        return "?"


def check_disk(ctx: Context) -> ValidationCheck:
    """Free disk for a model that must still be downloaded, and for vLLM's compile cache."""
    needs = [(_vllm_cache(ctx), VLLM_CACHE_NEEDED_BYTES, "vLLM's compile cache")]
    lookup = ctx.model if ctx.command is not None else None
    if lookup is not None and lookup.folder is None and lookup.shape is not None:
        download = int((lookup.shape.weights_bytes or 0) * 1.05)
        cache = hf_cache_dir(ctx.environ, home_of(ctx), ctx.arg("download_dir"))
        needs.append((cache, download, "downloading the model"))
    found = []
    for path, needed, why in needs:
        existing = nearest_existing(path)
        free = ctx.machine.disk_usage(existing).free
        found.append((existing, free, needed, why))
    value = "; ".join(f"{why}: {gib(free)} free at {path}" for path, free, _, why in found)
    expected = "; ".join(f">= {gib(needed)} for {why}" for _, _, needed, why in found)
    short = [(path, why) for path, free, needed, why in found if free < needed]
    if short:
        path, why = short[0]
        return failed(
            "disk_space",
            f"not enough disk for {why} at {path}",
            value=value,
            expected=expected,
            fix=f"free space under {path} or point the cache "
            "elsewhere (HF_HOME, --download-dir, VLLM_CACHE_ROOT)",
        )
    return passed("disk_space", f"enough free disk: {value}", value=value, expected=expected)


def _vllm_cache(ctx: Context) -> Path:
    if ctx.environ.get("VLLM_CACHE_ROOT"):
        return Path(ctx.environ["VLLM_CACHE_ROOT"]).expanduser()
    xdg = ctx.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else ctx.machine.home / ".cache") / "vllm"


def _meminfo(path: Path) -> dict[str, int]:
    """Return /proc/meminfo's fields in bytes."""
    fields = {}
    for line in (_read(path) or "").splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return fields


def _os_release(path: Path) -> str:
    for line in (_read(path) or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return "unknown distribution"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
