"""Who may do what. Three roles, as Django groups: viewers see everything and decide nothing;
operators also approve, veto, acknowledge, resolve and pause; admins also edit guardrails,
thresholds, strategies, hosts and users. Each role includes the ones below it; a superuser
holds them all. A signed-in user in none of the groups sees nothing."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)


def is_viewer(user: Any) -> bool:
    return has_role(user, VIEWER)


def is_operator(user: Any) -> bool:
    return has_role(user, OPERATOR)


def is_admin(user: Any) -> bool:
    return has_role(user, ADMIN)


def has_role(user: Any, role: str) -> bool:
    """True when `user` holds `role` or one above it."""
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    at_least = ROLES[ROLES.index(role) :]
    return bool(user.groups.filter(name__in=at_least).exists())


def role_required(
    role: str,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A view decorator: anonymous users go to the login page, users below `role` get 403."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, role):
                return HttpResponse(f"This needs the {role} role.", status=403)
            return view(request, *args, **kwargs)

        checked.required_role = role  # type: ignore[attr-defined]  # read by the role tests
        return checked

    return decorate


viewer_required = role_required(VIEWER)
operator_required = role_required(OPERATOR)
admin_required = role_required(ADMIN)
