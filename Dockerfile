# One image for every control-plane role (web, worker, beat) and for the simulated fleet.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SENTINEL_DATA_DIR=/var/lib/sentinel
WORKDIR /app

COPY pyproject.toml README.md ./
COPY sentinel sentinel
COPY monitor monitor
COPY learning learning
COPY mitigations mitigations
COPY agent agent
COPY simulator simulator
COPY templates templates
COPY static static
COPY manage.py ./
RUN pip install --no-cache-dir . \
 && useradd --system --home /var/lib/sentinel sentinel \
 && mkdir -p /var/lib/sentinel && chown sentinel /var/lib/sentinel \
 && DEBUG=False SECRET_KEY=build-only DATABASE_URL=postgres://build@localhost/build \
    REDIS_URL=redis://localhost:6379/0 python manage.py collectstatic --no-input -v 0

USER sentinel
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "sentinel.asgi:application"]
