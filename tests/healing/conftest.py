from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from healing import learner_store, triggers
from monitor import analysis, models_cache
from simulator.drill import ThreadedFleet
from simulator.fleet import FleetConfig


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
    models_cache.forget()  # no pattern model or state graph another test trained
    learner_store.forget_cache()
    triggers._rails = None


@pytest.fixture
def sim_fleet() -> Iterator[ThreadedFleet]:
    fleet = ThreadedFleet(FleetConfig(hosts=1, seed=3, scenarios=["healthy"], speed=0))
    yield fleet
    fleet.close()
