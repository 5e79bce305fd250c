from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from healing import learner_store, triggers
from monitor import analysis
from simulator.fleet import Fleet, FleetConfig, run_fleet


@pytest.fixture(autouse=True)
def _no_exploration(settings: Any) -> None:
    """Rank by the posterior means: the tests know which strategy comes first."""
    settings.HEALING_EXPLORE = False


@pytest.fixture(autouse=True)
def _defaults(request: Any) -> None:
    """Tests with transaction=True flush the tables the migration filled: fill them again."""
    if "django_db_setup" in request.fixturenames:
        from healing import defaults
        from healing.models import GuardrailPolicy, StrategySetting

        request.getfixturevalue("django_db_blocker")
        defaults.load(GuardrailPolicy, StrategySetting)


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    analysis._analyzers.clear()
    learner_store.forget_cache()
    triggers._rails = None


class ThreadedFleet:
    """The in-process simulated fleet (real agents, simulated vLLM) on a loop of its own, so
    Django code that calls asyncio.run() can talk to its agents from the test's thread."""

    def __init__(self, config: FleetConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._cm = run_fleet(config)
        self.fleet: Fleet = self.run(self._cm.__aenter__())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def advance(self, seconds: float) -> None:
        self.run(self.fleet.advance(seconds))

    def close(self) -> None:
        self.run(self._cm.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def sim_fleet() -> Iterator[ThreadedFleet]:
    fleet = ThreadedFleet(FleetConfig(hosts=1, seed=3, scenarios=["healthy"], speed=0))
    yield fleet
    fleet.close()
