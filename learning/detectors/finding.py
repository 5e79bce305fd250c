"""What a detector found: the failure it leads to, how bad, how long until the limit. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from learning.prediction import DEFAULT_HORIZON_S, Evidence
from learning.robust import Trend

CRITICAL_S = DEFAULT_HORIZON_S
WARNING_S = 1800.0
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class Finding:
    what: str  # the detector: "gpu_memory_leak", "kv_cache_exhaustion", ...
    failure_type: str  # the learning.prediction.FAILURE_TYPES entry it is a precursor of
    severity: str  # "info" (early warning), "warning" or "critical"
    summary: str  # one sentence for the operator
    time_to_exhaustion_s: float | None  # from `now`; 0 when already there; None: no limit in sight
    figures: dict[str, float] = field(default_factory=dict)  # the numbers, units in the names

    def evidence(self) -> Evidence:
        """Return this finding as a Prediction's evidence."""
        return Evidence(f"detector:{self.what}", self.summary, self.time_to_exhaustion_s)


def severity_for(eta_s: float | None) -> str:
    """Return the severity of a confirmed trend that reaches its limit in `eta_s` seconds."""
    if eta_s is not None and eta_s <= CRITICAL_S:
        return "critical"
    if eta_s is not None and eta_s <= WARNING_S:
        return "warning"
    return "info"


def urgency(f: Finding) -> tuple[int, float]:
    """Sort key: the most urgent finding first (by severity, then the soonest limit)."""
    eta = math.inf if f.time_to_exhaustion_s is None else f.time_to_exhaustion_s
    return SEVERITY_ORDER[f.severity], eta


def eta_to(tr: Trend, limit: float | None, now: float) -> float | None:
    """Return seconds from `now` until the line `tr` reaches `limit` (0 if it has)."""
    if limit is None or tr.slope <= 0:
        return None
    return max(float(limit - tr.value_at(max(now, tr.t_ref))) / tr.slope, 0.0)


def eta_words(eta_s: float | None, limit: str) -> str:
    """Return when the limit comes, in words: "full in ~3 min"."""
    if eta_s is None:
        return "no limit in sight"
    if eta_s <= 0:
        return f"{limit} now"
    if eta_s < 120:
        return f"{limit} in ~{eta_s:.0f} s"
    if eta_s < 7200:
        return f"{limit} in ~{eta_s / 60:.0f} min"
    return f"{limit} in ~{eta_s / 3600:.1f} h"
