"""Shared setup: a per-run Redis prefix, named actors, and the real servers tests talk to.

Django's settings are loaded (and the embedded PostgreSQL and Redis started, when
DATABASE_URL / REDIS_URL are unset) by pytest-django before this file is read.
"""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from sentinel.celery import app as celery_app

# Every key this run writes to Redis starts with RUN_PREFIX, so runs never see each other's
# messages or tasks (nor a demo's, when one shares the server).
RUN_PREFIX = f"sentinel-test-{uuid.uuid4().hex[:8]}"
if settings.configured:  # not when pure tests run with `-p no:django`
    settings.REDIS_PREFIX = RUN_PREFIX
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{RUN_PREFIX}:asgi"
    # Consumers reach the database from other threads; connections must close after each use
    # there, or the test database cannot be dropped at the end of the run.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    celery_app.conf.broker_transport_options = {"global_keyprefix": f"{RUN_PREFIX}:celery:"}


@pytest.fixture
def alice(django_user_model):  # type: ignore[no-untyped-def]
    """Alice the operator."""
    return django_user_model.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def bob(django_user_model):  # type: ignore[no-untyped-def]
    """Bob, who only looks."""
    return django_user_model.objects.create_user("bob", password="bob-password-1")
