"""Sign-ins: each one in the audit log (who, when, from where), and the page a locked-out user
sees. Failed ones keep the username that was tried, never the password (Django masks it before
the signal, and only the username is read). django-axes counts the failures and locks out;
its lockouts are audited here too."""

from __future__ import annotations

from typing import Any

from axes.helpers import get_client_ip_address
from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from healing import audit

ANONYMOUS = "anonymous"  # the actor of a failed or locked-out attempt: nobody proved who


def connect() -> None:
    user_logged_in.connect(logged_in, dispatch_uid="audit-login")
    user_logged_out.connect(logged_out, dispatch_uid="audit-logout")
    user_login_failed.connect(login_failed, dispatch_uid="audit-login-failed")
    user_locked_out.connect(locked_out, dispatch_uid="audit-lockout")


def logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    audit.record(user, "login", user.get_username(), ip=_ip(request))


def logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record(user, "logout", user.get_username(), ip=_ip(request))


def login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    tried = str(credentials.get("username") or "")[:150]
    locked = bool(getattr(request, "axes_locked_out", False))
    audit.record(ANONYMOUS, "login.failed", tried, username=tried, ip=_ip(request), locked=locked)


def locked_out(
    sender: Any, request: HttpRequest | None, username: str | None, ip_address: str | None,
    **kwargs: Any,
) -> None:  # fmt: skip
    tried = (username or "")[:150]
    audit.record(ANONYMOUS, "login.lockout", tried, "too many failed logins",
                 username=tried, ip=ip_address)  # fmt: skip


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any = None
) -> HttpResponse:
    """The answer to a login while locked out (settings.AXES_LOCKOUT_CALLABLE): 429, and why."""
    from axes.helpers import get_cool_off, get_failure_limit

    cool_off = get_cool_off(request)
    context = {
        "failure_limit": get_failure_limit(request, credentials),
        "lockout_min": round(cool_off.total_seconds() / 60) if cool_off else None,
    }
    return render(request, "registration/locked_out.html", context, status=429)


def _ip(request: HttpRequest | None) -> str | None:
    return get_client_ip_address(request) if request is not None else None
