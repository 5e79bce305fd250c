"""System checks for setting combinations that would fail at run time."""

from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured


@register()
def check_polling(app_configs, **kwargs):  # type: ignore[no-untyped-def]
    errors = []
    if settings.POLL_TIMEOUT_S >= settings.POLL_INTERVAL_S:
        errors.append(
            Error(
                f"POLL_TIMEOUT_S ({settings.POLL_TIMEOUT_S}) must be shorter than "
                f"POLL_INTERVAL_S ({settings.POLL_INTERVAL_S}), or polls of a slow host overlap.",
                id="sentinel.E001",
            )
        )
    if not settings.DEBUG and not _has_secret_key():
        errors.append(
            Error("DEBUG=False needs SECRET_KEY (or SECRET_KEY_FILE).", id="sentinel.E002")
        )
    return errors


def _has_secret_key() -> bool:
    try:
        return bool(settings.SECRET_KEY)
    except ImproperlyConfigured:  # Django refuses to hand out an empty one
        return False
