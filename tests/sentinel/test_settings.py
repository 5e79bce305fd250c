from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured

from sentinel import settings as sentinel_settings


def test_it_refuses_a_malformed_boolean(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DEBUG", "yes")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='yes': use True or False"):
        sentinel_settings.envbool("DEBUG", "True")


def test_it_refuses_a_poll_interval_below_one_second(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("POLL_INTERVAL_S", "0.5")
    with pytest.raises(ImproperlyConfigured, match=r"must be at least 1\.0"):
        sentinel_settings.envfloat("POLL_INTERVAL_S", "5", minimum=1.0)
    monkeypatch.setenv("POLL_INTERVAL_S", "often")
    with pytest.raises(ImproperlyConfigured, match="use a number"):
        sentinel_settings.envfloat("POLL_INTERVAL_S", "5", minimum=1.0)


def test_it_reads_secrets_from_files(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    assert sentinel_settings.envsecret("SECRET_KEY") == "from-a-file"
    monkeypatch.setenv("SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY_FILE="):
        sentinel_settings.envsecret("SECRET_KEY")


def test_it_flags_a_poll_timeout_as_long_as_the_interval(settings) -> None:  # type: ignore[no-untyped-def]
    settings.POLL_INTERVAL_S = 2.0
    settings.POLL_TIMEOUT_S = 2.0
    assert "sentinel.E001" in [message.id for message in run_checks()]
    settings.POLL_TIMEOUT_S = 1.5
    assert "sentinel.E001" not in [message.id for message in run_checks()]
