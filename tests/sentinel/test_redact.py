"""The logging filter that masks secrets which slip into a log line."""

from __future__ import annotations

import logging

from sentinel.redact import MASK, RedactSecrets, redact


def test_it_masks_bearer_tokens_passwords_in_urls_and_configured_secrets() -> None:
    line = ("GET http://gpu-01:9300 Authorization: Bearer abc.def-123 "
            "postgres://sentinel:pg-pass-1234@db/sentinel token=t0ken-value password: 'hunter22' "
            "and the key django-insecure-0123456789")  # fmt: skip
    out = redact(line, secrets=["django-insecure-0123456789", "short"])
    for secret in ("abc.def-123", "pg-pass-1234", "t0ken-value", "hunter22", "0123456789"):
        assert secret not in out
    assert f"Bearer {MASK}" in out and f"postgres://sentinel:{MASK}@db/sentinel" in out
    assert redact("prompt_tokens_per_s: 12.5") == "prompt_tokens_per_s: 12.5"


def test_the_filter_masks_messages_arguments_and_tracebacks(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SECRET_KEY = "a-secret-key-that-leaked-into-a-log"
    try:
        raise RuntimeError("headers={'Authorization': 'Bearer s3cr3t-t0ken'}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s for %s",
                                   (settings.SECRET_KEY, "gpu-01"), exc_info=True)  # fmt: skip
        import sys

        record.exc_info = sys.exc_info()
    assert RedactSecrets().filter(record)
    text = logging.Formatter().format(record)
    assert "leaked-into" not in text and "s3cr3t-t0ken" not in text
    assert f"key {MASK} for gpu-01" in text and "RuntimeError" in text
