"""The Django admin is the admin role's UI (policies, strategies, hosts, users): this site lets
only that role in. Anonymous users go to the one login page; signed-in users below the role get
403. Installed in place of django.contrib.admin, so every `admin.site.register` lands here.

Only Django's admin module is imported at the top: the app registry loads this file first.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden


class SentinelAdminSite(admin.AdminSite):
    site_header = "vLLM Sentinel administration"
    site_title = "Sentinel admin"

    def has_permission(self, request: HttpRequest) -> bool:
        from healing.roles import is_admin

        return bool(request.user.is_active and is_admin(request.user))

    def admin_view(self, view: Callable[..., Any], cacheable: bool = False) -> Any:
        inner = super().admin_view(view, cacheable)

        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return _to_login(request.get_full_path())
            if not self.has_permission(request):
                return HttpResponseForbidden("The admin needs the admin role.")
            return inner(request, *args, **kwargs)

        return checked

    def login(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """One login page for the whole product: the throttled one."""
        if request.user.is_authenticated and not self.has_permission(request):
            return HttpResponseForbidden("The admin needs the admin role.")
        return _to_login(request.GET.get("next") or self.index_url())

    def index_url(self) -> str:
        from django.urls import reverse

        return reverse("admin:index", current_app=self.name)


def _to_login(next_url: str) -> HttpResponse:
    from django.contrib.auth.views import redirect_to_login

    return redirect_to_login(next_url)


class SentinelAdminConfig(AdminConfig):
    default_site = "healing.admin_site.SentinelAdminSite"
