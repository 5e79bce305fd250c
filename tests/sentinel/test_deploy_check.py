"""Production settings pass Django's deployment checks with no warning at all."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
CHECK = (
    "import django; django.setup(); from django.core.management import call_command; "
    "call_command('check', '--deploy', fail_level='WARNING')"
)


def _check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sentinel.settings",
        "DATABASE_URL": settings.DATABASE_URL,  # never start an embedded server for a check
        "REDIS_URL": settings.REDIS_URL,
        "SENTINEL_DATA_DIR": str(tmp_path),
        **env,
    }
    return subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_production_settings_pass_the_deploy_check_without_warnings(tmp_path: Path) -> None:
    done = _check(tmp_path, DEBUG="False", SECRET_KEY=secrets.token_urlsafe(50),
                  ALLOWED_HOSTS="sentinel.example.com")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout + done.stderr


def test_production_without_a_secret_key_fails_the_check(tmp_path: Path) -> None:
    done = _check(tmp_path, DEBUG="False", SECRET_KEY="", ALLOWED_HOSTS="sentinel.example.com")
    assert done.returncode != 0 and "sentinel.E002" in done.stderr
