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
    return roles_of(user)[role]


def roles_of(user: Any) -> dict[str, bool]:
    """Return {"viewer": bool, "operator": bool, "admin": bool} for `user`, in one query."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return dict.fromkeys(ROLES, False)
    if user.is_superuser:
        return dict.fromkeys(ROLES, True)
    held = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    top = max((ROLES.index(name) for name in held), default=-1)
    return {role: ROLES.index(role) <= top for role in ROLES}


def context(request: HttpRequest) -> dict[str, Any]:
    """A template context processor: `roles.operator`, `roles.admin`... for the signed-in user."""
    from django.utils.functional import SimpleLazyObject

    return {"roles": SimpleLazyObject(lambda: roles_of(request.user))}


class RoleBackend:
    """An authentication backend that authenticates no one and gives the admin role every model
    permission, as Django gives a superuser: in the admin, the role decides, not per-model
    grants. Model admins still narrow it (the audit log has no add, change or delete)."""

    def authenticate(self, request: HttpRequest | None, **credentials: Any) -> None:
        return None

    def get_user(self, user_id: Any) -> None:
        return None

    def has_perm(self, user: Any, perm: str, obj: Any = None) -> bool:
        return self._is_admin(user)

    def has_module_perms(self, user: Any, app_label: str) -> bool:
        return self._is_admin(user)

    def _is_admin(self, user: Any) -> bool:
        # Django asks for dozens of permissions per admin page: one query per user object.
        if not hasattr(user, "_sentinel_is_admin"):
            user._sentinel_is_admin = user.is_active and is_admin(user)
        return bool(user._sentinel_is_admin)


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
