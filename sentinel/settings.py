"""Settings, read from the environment (see .env.example).

With DATABASE_URL and REDIS_URL unset the product runs on an embedded PostgreSQL and Redis
(sentinel/embedded.py), so a laptop needs nothing installed. Production sets SECRET_KEY,
ALLOWED_HOSTS, DEBUG=False and the two URLs.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    value = os.getenv(name, default)
    if value not in ("True", "False"):
        raise ImproperlyConfigured(f"{name}={value!r}: use True or False")
    return value == "True"


def envfloat(name: str, default: str, minimum: float) -> float:
    value = os.getenv(name, default)
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: use a number") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r}: must be at least {minimum}")
    return number


def envint(name: str, default: str, minimum: int) -> int:
    value = os.getenv(name, default)
    if not value.isdigit() or int(value) < minimum:
        raise ImproperlyConfigured(f"{name}={value!r}: use a whole number >= {minimum}")
    return int(value)


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


def envsecret(name: str) -> str | None:
    """Return NAME, or the contents of the file named by NAME_FILE (Docker/K8s secrets)."""
    if path := os.getenv(f"{name}_FILE"):
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r}: {exc.strerror}") from None
    return os.getenv(name)


DATA_DIR = Path(os.getenv("SENTINEL_DATA_DIR", str(BASE_DIR / ".sentinel")))
DEBUG = envbool("DEBUG", "True")


def _laptop_secret_key() -> str:
    """Return a per-checkout key kept in DATA_DIR, so sessions survive restarts of the demo."""
    path = DATA_DIR / "secret_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = envsecret("SECRET_KEY") or (_laptop_secret_key() if DEBUG else "")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")


def _database_url() -> str:
    if url := envsecret("DATABASE_URL"):
        return url
    from sentinel import embedded

    return embedded.postgres_url(DATA_DIR)


def _redis_url() -> str:
    if url := envsecret("REDIS_URL"):
        return url
    from sentinel import embedded

    return embedded.redis_url(DATA_DIR)


DATABASE_URL = _database_url()
REDIS_URL = _redis_url()
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL's JIT compiles a plan for a second or so to save less on the short queries pages
# make (150 ms of a 600 ms incident-list count on 100,000 incidents): off for this client.
DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Keys in Redis start with this, so several installs (or test runs) can share one server.
REDIS_PREFIX = os.getenv("SENTINEL_REDIS_PREFIX", "sentinel")

INSTALLED_APPS = [
    "daphne",
    "healing.admin_site.SentinelAdminConfig",  # django.contrib.admin, for the admin role only
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "axes",
    "monitor",
    "healing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # answers a locked-out login with the lockout page
]

ROOT_URLCONF = "sentinel.urls"
ASGI_APPLICATION = "sentinel.asgi.application"
WSGI_APPLICATION = "sentinel.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "healing.roles.context",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "fleet"
LOGOUT_REDIRECT_URL = "login"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses locked-out logins before any other
    "django.contrib.auth.backends.ModelBackend",
    "healing.roles.RoleBackend",  # the admin role holds every admin permission
]

# Login throttling (django-axes): after LOGIN_FAILURE_LIMIT failures of one username from one
# address, that pair is locked out for LOGIN_LOCKOUT_MIN minutes, counted from the last failure.
# The pair, not the address alone: colleagues behind one proxy do not lock each other out.
# Admins unlock early in the admin (Axes > Access attempts). The audit log has each attempt.
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", "5", minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envfloat("LOGIN_LOCKOUT_MIN", "15", minimum=0.1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # successful logins are in the audit log already
AXES_LOCKOUT_CALLABLE = "healing.logins.lockout_response"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing one
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = DEBUG  # serve straight from static/ without collectstatic on laptops

if not DEBUG:
    SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", "True")
    CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", "True")
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000", 0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    STORAGES = {
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

# Polling and storage.
POLL_INTERVAL_S = envfloat("POLL_INTERVAL_S", "5", minimum=1.0)
POLL_TIMEOUT_S = envfloat("POLL_TIMEOUT_S", str(min(2.0, POLL_INTERVAL_S * 0.8)), minimum=0.1)
POLL_BATCH_SIZE = envint("POLL_BATCH_SIZE", "500", minimum=1)
POLL_CONCURRENCY = envint("POLL_CONCURRENCY", "200", minimum=1)
CHECKPOINT_RETENTION_DAYS = envfloat("CHECKPOINT_RETENTION_DAYS", "7", minimum=0.01)
# Raw checkpoints older than that live on as 1-minute rollups (monitor/retention.py); those of
# a host around its incidents are kept raw while the incident exists.
CHECKPOINT_ROLLUP_RETENTION_DAYS = envfloat("CHECKPOINT_ROLLUP_RETENTION_DAYS", "90", minimum=0.01)
INCIDENT_WINDOW_BEFORE_S = envfloat("INCIDENT_WINDOW_BEFORE_S", "900", minimum=0)
INCIDENT_WINDOW_AFTER_S = envfloat("INCIDENT_WINDOW_AFTER_S", "300", minimum=0)
RETENTION_INTERVAL_S = envfloat("RETENTION_INTERVAL_S", "3600", minimum=10)
TRAIN_CHECK_INTERVAL_S = envfloat("TRAIN_CHECK_INTERVAL_S", "600", minimum=10)
PATTERN_RETRAIN_EVERY_S = envfloat("PATTERN_RETRAIN_EVERY_S", "86400", minimum=60)
MAX_CHECKPOINT_BYTES = envint("MAX_CHECKPOINT_BYTES", str(2 * 1024 * 1024), minimum=1024)

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": f"{REDIS_PREFIX}:asgi",
            "capacity": 500,
            "expiry": 30,
        },
    },
}

# Self-healing. Proposals are ranked by Thompson samples of the learner's posteriors (so a
# strategy with little history still gets proposed now and then); automatic execution needs
# the learner's confidence at these thresholds, and stays within these limits.
HEALING_EXPLORE = True
AUTO_THRESHOLD = envfloat("AUTO_THRESHOLD", "0.9", minimum=0.5)
AUTO_RISK_THRESHOLDS = {"high": max(AUTO_THRESHOLD, 0.98)}
MITIGATION_COOLDOWN_S = envfloat("MITIGATION_COOLDOWN_S", "600", minimum=0.0)
CAPACITY_BUDGET = envfloat("CAPACITY_BUDGET", "0.25", minimum=0.0)
MAX_HOSTS_PER_MODEL = 1
# An incident no signal has joined for this long, on a host that serves, is resolved.
INCIDENT_QUIET_S = envfloat("INCIDENT_QUIET_S", "600", minimum=0.0)
# The same failure back on a host this soon after its incident resolved reopens it; the same
# failure on hosts of one model opening this close together is one fleet incident.
INCIDENT_REOPEN_S = envfloat("INCIDENT_REOPEN_S", "900", minimum=0.0)
INCIDENT_GROUP_S = envfloat("INCIDENT_GROUP_S", "300", minimum=0.0)
# Runs of one strategy per hour, fleet-wide; mitigations of one host in 30 min that open its
# breaker.
MITIGATION_RATE_LIMIT = int(envfloat("MITIGATION_RATE_LIMIT", "10", minimum=0))
HOST_BREAKER_MITIGATIONS = int(envfloat("HOST_BREAKER_MITIGATIONS", "3", minimum=1))

CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_PREFIX}:celery:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
# Training takes minutes: it has a queue of its own, so polling never waits behind it.
# Prediction has a queue too: polling and storing stay fast while analysis scales apart.
CELERY_TASK_ROUTES = {
    "monitor.tasks.train_patterns_if_needed": {"queue": "learning"},
    "monitor.tasks.analyze_batch": {"queue": "analysis"},
    # Mitigations wait on agents (a drain, a restart): never in front of a poll.
    "healing.tasks.execute_proposal": {"queue": "healing"},
    "healing.tasks.verify_proposal": {"queue": "healing"},
    "healing.tasks.expire_proposals": {"queue": "healing"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # Each entry expires just under its period: a late poll is worth less than the next one.
    "poll-fleet": {
        "task": "monitor.tasks.poll_fleet",
        "schedule": POLL_INTERVAL_S,
        "options": {"expires": POLL_INTERVAL_S * 0.9},
    },
    "train-patterns": {
        "task": "monitor.tasks.train_patterns_if_needed",
        "schedule": TRAIN_CHECK_INTERVAL_S,
        "options": {"expires": TRAIN_CHECK_INTERVAL_S * 0.9, "queue": "learning"},
    },
    "expire-proposals": {
        "task": "healing.tasks.expire_proposals",
        "schedule": 5.0,
        "options": {"expires": 4.5, "queue": "healing"},
    },
    "prune-checkpoints": {
        "task": "monitor.tasks.prune_checkpoints",
        "schedule": RETENTION_INTERVAL_S,
        "options": {"expires": RETENTION_INTERVAL_S * 0.9},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"redact": {"()": "sentinel.redact.RedactSecrets"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {
        "pgserver": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # lockouts, not every login (those are in the audit log)
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}
