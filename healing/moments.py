"""Times typed into a filter: an ISO date or date and time (UTC unless it says otherwise), or
an age back from now such as 7d, 12h or 30m. Shared by the incident history and the audit log."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

AGE_UNITS_S = {"d": 86400, "h": 3600, "m": 60}


def parse_moment(text: str, *, end_of_day: bool = False) -> datetime:
    """Return the moment `text` names; a date alone is its midnight, or the next midnight
    with `end_of_day` (an exclusive "until" that takes in the whole day). ValueError else."""
    text = text.strip()
    if text[-1:] in AGE_UNITS_S and text[:-1].isdigit():
        return datetime.now(tz=UTC) - timedelta(seconds=int(text[:-1]) * AGE_UNITS_S[text[-1]])
    if len(text) == 10:
        day = date.fromisoformat(text)
        return datetime.combine(day + timedelta(days=end_of_day), time(), tzinfo=UTC)
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
