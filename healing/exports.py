"""What every CSV export does to a cell."""

from __future__ import annotations

# Spreadsheets run a cell that starts with one of these as a formula; exports hold text anyone
# can type (a username tried at the login page, a vLLM error, a note), so such cells get a
# leading quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value
