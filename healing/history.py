"""The incident history: filters from a URL's query string to a queryset, and the patterns
operators learn from. The list shows top-level incidents: a host's own, and fleet incidents
with their hosts folded in (a filter matches a fleet incident when one of its hosts matches).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.contrib.postgres.search import SearchQuery
from django.db.models import Avg, Case, Count, F, IntegerField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import TruncWeek

from healing.models import SEVERITY_RANK, Incident, Proposal
from healing.moments import parse_moment
from mitigations.base import Outcome
from monitor.models import Host

User = get_user_model()
RAN = ("executing", "verifying", "done", "failed")  # proposals whose steps were sent
SORTS: dict[str, tuple[Any, ...]] = {
    "newest": ("-opened_at", "-id"),
    "oldest": ("opened_at", "id"),
    "severity": ("-severity_rank", "-opened_at"),
    "longest": (F("recover_s").desc(nulls_last=True), "-opened_at"),  # open ones last
    "host": ("host__name", "-opened_at"),
    "failure": ("failure_type", "-opened_at"),
}
CHOICES = {
    "state": {s.value for s in Incident.State},
    "severity": set(SEVERITY_RANK),
    "healed": {h.value for h in Incident.Healed},
    "outcome": {o.value for o in Outcome},
}


@dataclass
class Filters:
    """What the list is asked for; every field is a query-string parameter of the same name."""

    host: str = ""
    model: str = ""
    failure_type: str = ""
    severity: str = ""
    state: str = ""
    healed: str = ""
    strategy: str = ""  # a mitigation that ran
    outcome: str = ""  # a mitigation outcome
    decided_by: str = ""  # an operator who decided on a proposal or resolved it
    q: str = ""  # text over errors, notes, signals and titles
    since: datetime | None = None  # opened at or after ("from" in the URL)
    until: datetime | None = None  # opened before ("to")
    sort: str = "newest"
    errors: list[str] = field(default_factory=list)

    def query_string(self) -> str:
        """This filter as a URL query string (for the page links)."""
        pairs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "errors" or not value or (f.name == "sort" and value == "newest"):
                continue
            if isinstance(value, datetime):
                value = value.strftime("%Y-%m-%dT%H:%M")
            pairs[{"since": "from", "until": "to"}.get(f.name, f.name)] = value
        return urlencode(pairs)


def parse(params: Mapping[str, str]) -> Filters:
    """Read the filters; what cannot be understood is left out and said in `errors`."""
    f = Filters()
    for name in ("host", "model", "failure_type", "strategy", "decided_by", "q"):
        setattr(f, name, (params.get(name) or "").strip()[:300])
    for name, allowed in CHOICES.items():
        value = (params.get(name) or "").strip()
        if value and value not in allowed:
            f.errors.append(f"{name} {value!r} is not one of {', '.join(sorted(allowed))}")
        elif value:
            setattr(f, name, value)
    for key, name in (("from", "since"), ("to", "until")):
        if text := (params.get(key) or "").strip():
            try:
                setattr(f, name, parse_moment(text))
            except ValueError:
                f.errors.append(
                    f"{key} {text!r} is not a time: use 2026-11-27, 2026-11-27T13:00, or 7d / 12h"
                )
    sort = params.get("sort") or "newest"
    if sort in SORTS:
        f.sort = sort
    else:
        f.errors.append(f"sort {sort!r} is not one of {', '.join(SORTS)}")
    return f


def incidents(f: Filters) -> QuerySet[Incident]:
    """The top-level incidents matching `f`, sorted."""
    rows = Incident.objects.filter(parent__isnull=True)
    if f.host:  # by id: a join to hosts under the OR would scan every incident
        host_id = Host.objects.filter(name=f.host).values_list("pk", flat=True).first()
        rows = rows.filter(_self_or_member(Q(host_id=host_id))) if host_id else rows.none()
    if f.model:
        rows = rows.filter(model_name=f.model)
    for name in ("failure_type", "severity", "state"):
        if value := getattr(f, name):
            rows = rows.filter(**{name: value})
    if f.healed:
        rows = rows.filter(healed_by=f.healed)
    if f.since:
        rows = rows.filter(opened_at__gte=f.since)
    if f.until:
        rows = rows.filter(opened_at__lt=f.until)
    if f.q:
        query = SearchQuery(f.q, config="simple", search_type="websearch")
        # The match on the row itself, not as `id IN (...)`: a common word matches most rows,
        # and the page's LIMIT then stops the scan early.
        members = Incident.objects.filter(search=query, parent__isnull=False).values("parent_id")
        rows = rows.filter(Q(search=query) | Q(pk__in=members))
    if f.strategy:  # what ran: the approved alternative, else the proposal's own strategy
        ran = Q(status__in=RAN)
        rows = rows.filter(
            _has_proposal(ran & Q(chosen_strategy=f.strategy))
            | _has_proposal(ran & Q(chosen_strategy="", strategy=f.strategy))
        )
    if f.outcome:
        rows = rows.filter(_has_proposal(Q(outcome=f.outcome)))
    if f.decided_by:
        who = User.objects.filter(username=f.decided_by).values_list("pk", flat=True).first()
        rows = (
            rows.filter(
                _has_proposal(Q(decided_by_id=who))
                | Q(pk__in=Incident.objects.filter(resolved_by_id=who).values("pk"))
                | Q(pk__in=Incident.objects.filter(acknowledged_by_id=who).values("pk"))
            )
            if who
            else rows.none()
        )
    if f.sort == "severity":
        rows = rows.annotate(severity_rank=_severity_rank())
    return rows.order_by(*SORTS[f.sort])


# Both below are uncorrelated `id IN (subquery)` tests, which PostgreSQL runs once each as a
# hashed set; correlated EXISTS joined by OR ran once per incident (over a second on 100,000).


def _self_or_member(match: Q) -> Q:
    """`match` on the incident itself, or on one of a fleet incident's hosts."""
    own = Incident.objects.filter(match).values("pk")
    members = Incident.objects.filter(match, parent__isnull=False).values("parent_id")
    return Q(pk__in=own) | Q(pk__in=members)


def _has_proposal(match: Q) -> Q:
    """A proposal matching `match` on the incident, or on one of a fleet incident's hosts."""
    own = Proposal.objects.filter(match).values("incident_id")
    members = Incident.objects.filter(parent__isnull=False, pk__in=own).values("parent_id")
    return Q(pk__in=own) | Q(pk__in=members)


def _severity_rank() -> Case:
    whens = [When(severity=name, then=Value(rank)) for name, rank in SEVERITY_RANK.items()]
    return Case(*whens, default=Value(0), output_field=IntegerField())


# ---------------------------------------------------------------- patterns


def patterns(since: datetime, until: datetime, top: int = 10) -> dict[str, Any]:
    """Top failure types per host, model and week; mean time to detect and to recover; the
    share healed automatically; the hosts that fail most. Counted over host incidents (a fleet
    incident's hosts each count once)."""
    rows = Incident.objects.filter(host__isnull=False, opened_at__gte=since, opened_at__lt=until)
    done = Q(state=Incident.State.RESOLVED)
    totals = rows.aggregate(
        incidents=Count("id"),
        mttd=Avg("detect_s", filter=done),
        mttr=Avg("recover_s", filter=done),
        mttm=Avg("mitigate_s", filter=done),
        lead=Avg("lead_time_s", filter=done),
        resolved=Count("id", filter=done),
        **{way.value: Count("id", filter=done & Q(healed_by=way)) for way in Incident.Healed},
    )
    per_host = list(
        rows.values("host__name", "failure_type")
        .annotate(n=Count("id"), recover_sum=Sum("recover_s"), recovered=Count("recover_s"))
        .order_by("-n")
    )
    n = totals["resolved"]
    return {
        "incidents": totals["incidents"],
        "totals": totals,
        "share_automatic": (totals["automatic"] / n) if n else None,
        "by_host": per_host[:top],
        "by_model": list(
            rows.values("model_name", "failure_type").annotate(n=Count("id")).order_by("-n")[:top]
        ),
        "by_week": list(
            rows.annotate(week=TruncWeek("opened_at"))
            .values("week", "failure_type")
            .annotate(n=Count("id"))
            .order_by("-week", "-n")[: top * 4]
        ),
        "worst_hosts": _worst_hosts(per_host)[:top],
    }


def _worst_hosts(per_host: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hosts by their incidents, with their mean time to recover, from the per-failure rows."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])  # n, recover s, recovered
    for row in per_host:
        s = sums[row["host__name"]]
        s[0], s[1], s[2] = (
            s[0] + row["n"],
            s[1] + (row["recover_sum"] or 0.0),
            s[2] + row["recovered"],
        )
    worst = [
        {"host__name": name, "n": int(n), "mttr": total / recovered if recovered else None}
        for name, (n, total, recovered) in sums.items()
    ]
    return sorted(worst, key=lambda h: -h["n"])
