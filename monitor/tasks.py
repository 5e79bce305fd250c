from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from monitor import analysis, healing, ingest, live, polling, retention, training
from monitor.models import Host

log = logging.getLogger(__name__)


@shared_task(expires=settings.POLL_INTERVAL_S * 0.9)
def poll_fleet() -> str:
    """Split the enabled hosts into batches and poll each batch on whichever worker is free."""
    ids = list(Host.objects.filter(enabled=True).order_by("pk").values_list("pk", flat=True))
    size = settings.POLL_BATCH_SIZE
    batches = [ids[i : i + size] for i in range(0, len(ids), size)]
    for batch in batches:
        poll_hosts.apply_async((batch,), expires=settings.POLL_INTERVAL_S * 0.9)
    return f"{len(ids)} hosts in {len(batches)} batches"


@shared_task(expires=settings.POLL_INTERVAL_S * 0.9)
def poll_hosts(host_ids: list[int]) -> str:
    hosts = Host.objects.in_bulk(host_ids)
    targets = [
        polling.PollTarget(
            host_id=h.pk,
            name=h.name,
            url=h.agent_url,
            token=h.agent_token,
            events_since=h.events_seen,
        )
        for h in hosts.values()
    ]
    results = asyncio.run(
        polling.poll_hosts(
            targets,
            timeout_s=settings.POLL_TIMEOUT_S,
            concurrency=settings.POLL_CONCURRENCY,
            max_bytes=settings.MAX_CHECKPOINT_BYTES,
        )
    )
    now = timezone.now()
    report = ingest.store_poll_results(hosts, results, now)
    live.hosts_updated(report)
    if report.checkpoints:
        # Prediction runs on its own queue: ingest stays fast, analysis scales on its own.
        stored = [host.pk for host, _ in report.checkpoints]
        analyze_batch.apply_async((stored, now.isoformat()), expires=settings.POLL_INTERVAL_S * 3)
    return f"polled {len(targets)} hosts: {len(report.stored)} stored, {report.failed} failed"


@shared_task
def analyze_batch(host_ids: list[int], received_at: str) -> str:
    """Predict from the checkpoints one poll stored; store and push what it finds."""
    stored = analysis.stored_checkpoints(host_ids, datetime.fromisoformat(received_at))
    watch = healing.Watch()
    findings = analysis.analyze_stored(
        stored, timezone.now(), observe=watch.observe, limits=watch.rails.limits
    )
    live.hosts_analysed([host for host, _ in stored], findings)
    proposals = healing.handle(watch.fired(findings.checkpoints), timezone.now())
    live.proposals_changed([p.pk for p in proposals])
    return (f"analysed {len(stored)} checkpoints in {1000 * findings.cpu_s:.0f} ms of CPU, "
            f"{len(proposals)} proposals")  # fmt: skip


@shared_task(expires=settings.RETENTION_INTERVAL_S * 0.9)
def prune_checkpoints() -> str:
    """Roll up the checkpoints about to go, prune raw ones, then prune old rollups."""
    window = retention.IncidentWindow(
        before=timedelta(seconds=settings.INCIDENT_WINDOW_BEFORE_S),
        after=timedelta(seconds=settings.INCIDENT_WINDOW_AFTER_S),
    )
    pruned = retention.apply_retention(
        timezone.now(),
        keep_raw=timedelta(days=settings.CHECKPOINT_RETENTION_DAYS),
        keep_rollups=timedelta(days=settings.CHECKPOINT_ROLLUP_RETENTION_DAYS),
        window=window,
    )
    summary = (f"rolled up {pruned.rolled_up} host-minutes, deleted {pruned.deleted} checkpoints "
               f"and {pruned.rollups_deleted} rollups")  # fmt: skip
    log.info("%s", summary)
    return summary


@shared_task(expires=settings.TRAIN_CHECK_INTERVAL_S * 0.9)
def train_patterns_if_needed() -> str:
    """Train the pattern model when there is none, it cannot be loaded, or failures piled up."""
    return training.train_if_needed(timezone.now())
