"""Run the predictor on every stored checkpoint and keep its findings in the database.

Each worker process keeps one learning.predict.HostAnalyzer per host (its recent window and
streaming detectors), fed with the checkpoints it stores. A host whose previous checkpoint
this process did not see (its batches went to another worker, or the process is new)
is reloaded from the checkpoint table first, so a window never has a hole in it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction

from agent.checkpoint import Checkpoint, to_dict
from learning import hysteresis
from learning.predict import Analysis, HostAnalyzer
from learning.prediction import Forecast as ForecastData
from learning.prediction import Prediction as PredictionData
from monitor import models_cache
from monitor.models import Forecast, Host, Prediction

log = logging.getLogger(__name__)

MAX_HOSTS_CACHED = 5000


@dataclass
class AnalysisReport:
    changed: set[int] = field(default_factory=set)  # hosts whose predictions opened or closed
    risk_changed: set[int] = field(default_factory=set)  # hosts whose fleet row must be redrawn
    forecasts: dict[int, list[ForecastData]] = field(default_factory=dict)
    checkpoints: dict[int, dict[str, Any]] = field(default_factory=dict)  # host -> newest, as dict
    cpu_s: float = 0.0


_analyzers: OrderedDict[int, tuple[HostAnalyzer, float]] = OrderedDict()  # host -> (it, last t)


# Called with every checkpoint a host's analysis takes in, in order (the ones this process
# missed first), and the predictions of the newest: the guardrails watch the same stream.
Observer = Callable[[Host, dict[str, Any], Sequence[PredictionData]], None]


def analyze_stored(
    stored: Sequence[tuple[Host, Checkpoint]],
    now: datetime,
    observe: Observer | None = None,
    limits: Mapping[str, Mapping[str, float]] | None = None,
) -> AnalysisReport:
    """Analyse each host's new checkpoint and store predictions and forecasts; `limits`: the
    guardrails' lines the forecasts say when they will cross (Guardrails.limits)."""
    report = AnalysisReport()
    started = time.process_time()
    model, graph = models_cache.pattern_model(), models_cache.state_graph()
    results: list[tuple[Host, Analysis]] = []
    for host, cp in stored:
        analyzer, missed = _analyzer_for(host, cp)
        checkpoint = to_dict(cp)
        analyzer.add(checkpoint)
        analysis = analyzer.analyze(cp.collected_at, model=model, graph=graph, limits=limits)
        results.append((host, analysis))
        report.checkpoints[host.pk] = checkpoint
        if observe is not None:
            for older in missed:
                observe(host, older, ())
            observe(host, checkpoint, analysis.predictions)
    report.cpu_s = time.process_time() - started
    with transaction.atomic():
        open_rows = _open_predictions([host.pk for host, _ in results])
        for host, analysis in results:
            _store(host, analysis, open_rows.get(host.pk, {}), now, report)
        _store_forecasts(results, now)
        report.risk_changed = _update_risk([host for host, _ in results])
    return report


def stored_checkpoints(host_ids: list[int], received_at: datetime) -> list[tuple[Host, Checkpoint]]:
    """Return the checkpoints one poll stored (they share its received_at), with their hosts."""
    from agent.checkpoint import decode

    hosts = Host.objects.in_bulk(host_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT host_id, data::text FROM monitor_checkpoint "
            "WHERE host_id = ANY(%s) AND received_at = %s ORDER BY host_id",
            [list(hosts), received_at],
        )
        return [(hosts[host_id], decode(text)) for host_id, text in cursor.fetchall()]


def _analyzer_for(host: Host, cp: Checkpoint) -> tuple[HostAnalyzer, list[dict[str, Any]]]:
    """Return the host's analyzer, caught up to just before `cp`, and the checkpoints it was
    caught up with."""
    cached = _analyzers.get(host.pk)
    previous_t = (host.latest or {}).get("previous_collected_at")
    missed: list[dict[str, Any]] = []
    if cached is None:
        analyzer = HostAnalyzer()
        missed = recent_checkpoints(host.pk, cp.collected_at - analyzer.window_s, cp.collected_at)
        cached = (analyzer, 0.0)
    elif previous_t is not None and cached[1] < previous_t:
        # Only the checkpoints this process missed (another worker, or a dropped late batch).
        start = max(cached[1], cp.collected_at - cached[0].window_s)
        missed = recent_checkpoints(host.pk, start, cp.collected_at)
    for checkpoint in missed:
        cached[0].add(checkpoint)
    _analyzers[host.pk] = (cached[0], cp.collected_at)
    _analyzers.move_to_end(host.pk)
    while len(_analyzers) > MAX_HOSTS_CACHED:
        _analyzers.popitem(last=False)
    return cached[0], missed


def recent_checkpoints(host_id: int, after: float, before: float) -> list[dict[str, Any]]:
    """Return the host's stored checkpoints collected in (after, before), oldest first."""
    import msgspec

    since = datetime.fromtimestamp(after, tz=UTC)
    until = datetime.fromtimestamp(before, tz=UTC)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data::text FROM monitor_checkpoint WHERE host_id = %s "
            "AND collected_at > %s AND collected_at < %s ORDER BY collected_at",
            [host_id, since, until],
        )
        return [msgspec.json.decode(row[0]) for row in cursor.fetchall()]


def _open_predictions(host_ids: list[int]) -> dict[int, dict[str, Prediction]]:
    rows: dict[int, dict[str, Prediction]] = {}
    for row in Prediction.objects.filter(host_id__in=host_ids, closed_at__isnull=True):
        rows.setdefault(row.host_id, {})[row.failure_type] = row
    return rows


def _store(
    host: Host,
    analysis: Analysis,
    open_rows: dict[str, Prediction],
    now: datetime,
    report: AnalysisReport,
) -> None:
    at = now.timestamp()
    open_since = {t: row.first_predicted_at.timestamp() for t, row in open_rows.items()}
    decision = hysteresis.decide(open_since, analysis.predictions, at)
    for prediction in decision.opened:
        Prediction.objects.create(host=host, first_predicted_at=now, **_fields(prediction, now))
    for prediction in decision.kept:
        Prediction.objects.filter(pk=open_rows[prediction.failure_type].pk).update(
            **_fields(prediction, now)
        )
    for failure_type in decision.closed:
        _close(open_rows[failure_type], host, now)
    if decision.opened or decision.closed:
        report.changed.add(host.pk)
    report.forecasts[host.pk] = analysis.forecasts


def _fields(prediction: PredictionData, now: datetime) -> dict[str, Any]:
    ttf = prediction.time_to_failure_s
    return {
        "failure_type": prediction.failure_type,
        "probability": round(prediction.probability, 4),
        "confidence": round(prediction.confidence, 4),
        "time_to_failure_s": ttf,
        "expected_failure_at": now + timedelta(seconds=ttf) if ttf is not None else None,
        "evidence": [
            {"source": e.source, "detail": e.detail, "value": e.value} for e in prediction.evidence
        ],
        "recommended_mitigations": list(prediction.recommended_mitigations),
        "updated_at": now,
    }


def _close(row: Prediction, host: Host, now: datetime) -> None:
    failed = host.lifecycle_state.startswith("failed_")
    row.closed_at = now
    row.outcome = "happened" if failed else "lapsed"
    row.save(update_fields=["closed_at", "outcome"])


def _store_forecasts(results: Sequence[tuple[Host, Analysis]], now: datetime) -> None:
    """Replace each host's latest forecasts, the whole batch in one upsert."""
    rows = [
        Forecast(host=host, metric=fc.metric, made_at=now, times=fc.times, values=fc.values,
                 lower=fc.lower, upper=fc.upper, crossings=fc.crossings)
        for host, analysis in results
        for fc in analysis.forecasts
    ]  # fmt: skip
    Forecast.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["host", "metric"],
        update_fields=["made_at", "times", "values", "lower", "upper", "crossings"],
    )


def _update_risk(hosts: list[Host]) -> set[int]:
    """Set each host's risk (its most probable open prediction) for the fleet's ordering;
    return the hosts whose risk or top prediction changed."""
    changed: set[int] = set()
    top: dict[int, Prediction] = {}
    ids = [host.pk for host in hosts]
    for row in Prediction.objects.filter(host_id__in=ids, closed_at__isnull=True):
        if row.host_id not in top or row.probability > top[row.host_id].probability:
            top[row.host_id] = row
    for host in hosts:
        row = top.get(host.pk)
        risk, summary = (row.probability, _risk_summary(row)) if row else (0.0, {})
        if (risk, summary) != (host.risk, host.top_prediction):
            host.risk, host.top_prediction = risk, summary
            Host.objects.filter(pk=host.pk).update(risk=risk, top_prediction=summary)
            changed.add(host.pk)
    return changed


def _risk_summary(row: Prediction) -> dict[str, Any]:
    return {
        "failure_type": row.failure_type,
        "probability": row.probability,
        "expected_failure_at": row.expected_failure_at.timestamp()
        if row.expected_failure_at
        else None,
    }
