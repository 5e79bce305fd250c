"""The real thing, as separate processes: a simulated fleet, a Celery worker and beat, daphne.

They share the test database (committed data: these tests use `transactional_db`) and the
run's Redis prefix, and are stopped before the database is flushed.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from monitor import registry
from monitor.models import Host
from sentinel.processes import ProcessGroup
from tests.ports import free_port

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


@dataclass
class ControlPlane:
    url: str
    hosts: list[Host]
    log_dir: Path

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.log_dir.glob("*.log")
        )


def _test_database_url() -> str:
    parts = urlsplit(settings.DATABASE_URL)
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


def _wait_for_port(port: int, group: ProcessGroup) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if (exited := group.first_exited()) is not None:
            raise RuntimeError(f"{exited.name} exited early")
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def _wait_for_file(path: Path, group: ProcessGroup) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if (exited := group.first_exited()) is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{exited.name if exited else 'simulator'} did not write {path}")
        time.sleep(0.1)


@pytest.fixture
def control_plane(request, transactional_db, tmp_path) -> Iterator[ControlPlane]:  # type: ignore[no-untyped-def]
    """The whole product on a simulated fleet; `@pytest.mark.fleet(scenario=, speed=, hosts=)`
    picks the fleet (default: 3 healthy hosts in real time)."""
    from tests.conftest import RUN_PREFIX

    marker = request.node.get_closest_marker("fleet")
    fleet = {"hosts": 3, "scenario": "healthy", "speed": 1.0, **(marker.kwargs if marker else {})}

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sentinel.settings",
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,  # sessions made here must be valid there
        "SENTINEL_REDIS_PREFIX": RUN_PREFIX,
        "SENTINEL_DATA_DIR": str(tmp_path / "data"),
        "POLL_INTERVAL_S": "1",
        "POLL_TIMEOUT_S": "0.8",
        "PYTHONPATH": str(ROOT),
    }
    group = ProcessGroup(log_dir=tmp_path / "logs")
    manifest = tmp_path / "fleet.json"
    port = free_port()
    try:
        group.start(
            "simulator",
            [
                str(BIN / "sentinel-simulate"),
                *("--hosts", str(fleet["hosts"]), "--seed", "11"),
                *("--scenario", fleet["scenario"], "--speed", str(fleet["speed"])),
                *("--manifest", str(manifest)),
            ],
            env,
        )
        _wait_for_file(manifest, group)
        hosts = registry.register_manifest(manifest)
        group.start(
            "web",
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "sentinel.asgi:application"],
            env,
        )
        group.start(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "sentinel",
                "worker",
                "-l",
                "info",
                *("--concurrency", "1", "--queues", "celery,analysis,learning,healing"),
                "--without-gossip",
                "--without-mingle",
            ],
            env,
        )
        group.start(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "sentinel",
                "beat",
                "-l",
                "info",
                "-s",
                str(tmp_path / "beat-schedule"),
            ],
            env,
        )
        _wait_for_port(port, group)
        plane = ControlPlane(url=f"http://127.0.0.1:{port}", hosts=hosts, log_dir=tmp_path / "logs")
        yield plane
    finally:
        group.stop_all()
