"""Shared setup: a per-run Redis prefix, named actors, and the real servers tests talk to.

Django's settings are loaded (and the embedded PostgreSQL and Redis started, when
DATABASE_URL / REDIS_URL are unset) by pytest-django before this file is read.
"""

from __future__ import annotations

import uuid
from typing import Any

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


def make_user(
    username: str, role: str | None = None, password: str | None = None, **fields: Any
) -> Any:
    """A user with `role` ("viewer", "operator", "admin"; None: in no group). Without
    `password` the user can only be signed in with `force_login` (and is made faster: hashing
    a password takes a good part of a second)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username, password=password, **fields)
    if role is not None:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def alice(db):  # type: ignore[no-untyped-def]
    """Alice the operator."""
    return make_user("alice", "operator", password="alice-password-1")


@pytest.fixture
def bob(db):  # type: ignore[no-untyped-def]
    """Bob, who only looks (a viewer)."""
    return make_user("bob", "viewer", password="bob-password-1")
