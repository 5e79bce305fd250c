"""A logging filter that masks secrets in every record: bearer tokens, passwords in URLs, and
the values of the secrets Sentinel was configured with. A safety net: the code logs no secret
on purpose, and this catches one that slips into an exception message or a library's log."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "********"
MIN_SECRET_CHARS = 8  # shorter configured values would mask ordinary words
PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s'\",;]+"),
    re.compile(r"(?i)((?:token|password|passwd|secret|api_key)[\"']?\s*[=:]\s*[\"']?)[^\s'\",;&]+"),
    re.compile(r"(://[^/\s:@]*:)[^@/\s]+(@)"),  # scheme://user:password@host
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return `text` with bearer tokens, passwords and each of `secrets` replaced by a mask."""
    for pattern in PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK + (m.group(2) if m.lastindex == 2 else ""),
                           text)  # fmt: skip
    for secret in secrets:
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, MASK)
    return text


def url_password(url: str) -> str:
    """Return the password in a URL like postgres://user:password@host/db, or ""."""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


class RedactSecrets(logging.Filter):
    """Rewrites each record's message (and its traceback) with `redact`. Configured secrets are
    read from settings on first use: SECRET_KEY and the passwords in DATABASE_URL/REDIS_URL."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._secrets: list[str] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._configured()
        message = record.getMessage()
        record.msg, record.args = redact(message, secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        return True

    def _configured(self) -> list[str]:
        if self._secrets is None:
            from django.conf import settings

            if not settings.configured:
                return []
            values = [
                getattr(settings, "SECRET_KEY", ""),
                url_password(getattr(settings, "DATABASE_URL", "")),
                url_password(getattr(settings, "REDIS_URL", "")),
            ]
            self._secrets = [v for v in values if v]
        return self._secrets
