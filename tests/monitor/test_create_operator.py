"""manage.py create_operator: one account, one role, audited; the password printed once."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from healing import roles
from healing.models import AuditEntry

pytestmark = pytest.mark.django_db


def _create(*args: str) -> str:
    out = io.StringIO()
    call_command("create_operator", *args, stdout=out)
    return out.getvalue()


def test_it_creates_an_account_with_the_role_asked_and_audits_it() -> None:
    printed = _create("dana", "--role", "viewer")
    password = printed.rsplit("password ", 1)[-1].strip().strip("'")
    dana = get_user_model().objects.get(username="dana")
    assert dana.check_password(password)
    assert roles.roles_of(dana) == {"viewer": True, "operator": False, "admin": False}
    entry = AuditEntry.objects.get(action="user.create")
    assert entry.target == "dana" and entry.detail == {"role": "viewer", "superuser": False}
    assert password not in str(entry.detail) + entry.reason

    _create("dana", "--role", "admin")
    _create("dana", "--role", "operator")  # a reset may lower the role
    dana.refresh_from_db()
    assert roles.roles_of(dana) == {"viewer": True, "operator": True, "admin": False}
    assert AuditEntry.objects.filter(action="user.reset").count() == 2


def test_the_demo_account_can_do_everything() -> None:
    _create("operator", "--staff")
    user = get_user_model().objects.get(username="operator")
    assert user.is_superuser and all(roles.roles_of(user).values())
