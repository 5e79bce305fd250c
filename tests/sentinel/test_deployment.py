"""docker-compose.yml cannot run here (no Docker engine), so check that it names real things."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
OUR_SERVICES = {
    name: service for name, service in COMPOSE["services"].items() if "build" in service
}


def test_it_deploys_every_role_of_the_product() -> None:
    assert {"postgres", "redis", "web", "worker", "beat", "fleet"} <= set(COMPOSE["services"])
    assert {"web", "worker", "beat", "fleet"} <= set(OUR_SERVICES)


@pytest.mark.parametrize("name", sorted(OUR_SERVICES))
def test_it_starts_each_service_with_a_real_entry_point(name: str) -> None:
    command = OUR_SERVICES[name]["command"]
    program, args = command[0], command[1:]
    if program == "daphne":
        module, attribute = args[-1].split(":")
        assert getattr(importlib.import_module(module), attribute) is not None
    elif program == "celery":
        assert args[:2] == ["-A", "sentinel"]
        assert importlib.import_module("sentinel").celery_app.main == "sentinel"
        assert args[2] in ("worker", "beat")
    elif program == "python":
        assert args[0] == "manage.py"
        assert args[1] in get_commands(), f"manage.py has no command {args[1]!r}"
    else:
        assert program in SCRIPTS, f"{program} is not a console script of the project"
        module, function = SCRIPTS[program].split(":")
        entry = importlib.import_module(module)
        assert callable(getattr(entry, function))
        entry.parse_args(args)  # exits (fails the test) on an option the program lacks


def test_it_points_every_service_at_the_compose_databases() -> None:
    env = COMPOSE["x-sentinel"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:" in env["DATABASE_URL"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"


def test_it_runs_a_worker_for_every_queue_tasks_are_routed_to() -> None:
    from django.conf import settings

    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {"celery"}
    consumed: set[str] = set()
    for service in OUR_SERVICES.values():
        command = service["command"]
        if command[:4] == ["celery", "-A", "sentinel", "worker"]:
            queues = command[command.index("--queues") + 1] if "--queues" in command else "celery"
            consumed |= set(queues.split(","))
    assert routed <= consumed
