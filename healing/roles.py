"""Who may do what. Operators decide on proposals and pause automation; admins edit policies
and strategy settings. (Groups "operator" and "admin"; a superuser is both.)"""

from __future__ import annotations

from typing import Any

OPERATOR, ADMIN = "operator", "admin"


def is_operator(user: Any) -> bool:
    return bool(user.is_authenticated and (user.is_superuser or _in(user, OPERATOR, ADMIN)))


def is_admin(user: Any) -> bool:
    return bool(user.is_authenticated and (user.is_superuser or _in(user, ADMIN)))


def _in(user: Any, *groups: str) -> bool:
    return user.groups.filter(name__in=groups).exists()
