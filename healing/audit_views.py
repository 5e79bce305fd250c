"""The audit log, browsable and exportable, for operators and admins.

Not for viewers: the log holds more than the fleet's state. It has the address of every login
and, for failed ones, the username that was typed, which is now and then a password typed into
the wrong field. Operators and admins answer for what happens to the fleet and need the record.
There is no view that changes or deletes an entry.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

from channels.db import database_sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from healing import audit_log
from healing.models import AuditEntry
from healing.roles import operator_required

PER_PAGE = 50


@operator_required
@require_GET
def audit(request: HttpRequest) -> HttpResponse:
    f, problems = audit_log.parse_filter(request.GET)
    query = request.GET.copy()
    query.pop("page", None)
    page = Paginator(audit_log.search(f), PER_PAGE).get_page(request.GET.get("page"))
    for entry in page:
        entry.detail_text = json.dumps(entry.detail, indent=2, sort_keys=True)
    context = {"f": f, "params": request.GET, "problems": problems, "page": page,
               "query": query.urlencode()}  # fmt: skip
    return render(request, "healing/audit.html", context, status=400 if problems else 200)


@operator_required
@require_GET
def audit_csv(request: HttpRequest) -> HttpResponse:
    return _export(request, audit_log.csv_lines, "text/csv; charset=utf-8", "csv")


@operator_required
@require_GET
def audit_json(request: HttpRequest) -> HttpResponse:
    return _export(request, audit_log.json_lines, "application/json", "json")


def _export(
    request: HttpRequest,
    lines: Callable[[Iterator[AuditEntry]], Iterator[str]],
    content_type: str,
    suffix: str,
) -> HttpResponse:
    f, problems = audit_log.parse_filter(request.GET)
    if problems:
        return HttpResponse("; ".join(problems), status=400, content_type="text/plain")
    chunks = lines(audit_log.in_batches(audit_log.search(f)))
    name = f"sentinel-audit-{timezone.now():%Y%m%dT%H%M%SZ}.{suffix}"
    response = StreamingHttpResponse(_streamed(request, chunks), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _streamed(request: HttpRequest, chunks: Iterator[str]) -> Iterator[str] | AsyncIterator[str]:
    """Under the ASGI server a response streams only from an async iterator (a plain one is
    read whole first): there, each next chunk, and its database query, runs in a thread that
    closes its stale connections (as the consumers' database calls do)."""
    if not isinstance(request, ASGIRequest):
        return chunks
    return _each_in_thread(chunks)


async def _each_in_thread(chunks: Iterator[str]) -> AsyncIterator[str]:
    step = database_sync_to_async(next)
    while (chunk := await step(chunks, None)) is not None:
        yield chunk
