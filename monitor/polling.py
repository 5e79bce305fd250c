"""Poll agents concurrently over HTTP and validate what they send. No ORM here.

aiohttp rather than httpx: measured on this project's machines, an httpx AsyncClient spent
0.7 ms of CPU per request against one host and 6.5 ms against 400, aiohttp 0.06-0.16 ms,
and polling hundreds of agents a second is this module's whole job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from agent.checkpoint import Checkpoint, CheckpointError, decode

EXCERPT_CHARS = 2000


@dataclass(frozen=True, slots=True)
class PollTarget:
    host_id: int
    name: str
    url: str
    token: str = field(repr=False)  # a secret: never in a repr, so never in a log line
    events_since: int = 0  # the highest agent event id already stored for this host


@dataclass(slots=True)
class PollResult:
    target: PollTarget
    elapsed_s: float
    checkpoint: Checkpoint | None = None
    payload: bytes = b""
    error_kind: str = ""  # an IngestError.Kind value when checkpoint is None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.checkpoint is not None

    @property
    def unreachable(self) -> bool:
        """True when the agent never answered (as opposed to answering badly)."""
        return self.error_kind in ("timeout", "connection")


async def poll_hosts(
    targets: Sequence[PollTarget],
    *,
    timeout_s: float,
    concurrency: int,
    max_bytes: int,
) -> list[PollResult]:
    """Return one PollResult per target, in order; one host's failure never touches another's."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return list(await asyncio.gather(*(_poll(session, t, max_bytes) for t in targets)))


async def _poll(session: aiohttp.ClientSession, target: PollTarget, max_bytes: int) -> PollResult:
    started = time.perf_counter()
    result = PollResult(target=target, elapsed_s=0.0)
    try:
        await _fetch(session, target, max_bytes, result)
    except TimeoutError:
        result.error_kind, result.error = "timeout", "agent did not answer in time"
    except aiohttp.ClientError as exc:
        result.error_kind, result.error = "connection", _describe(exc)
    except OSError as exc:
        result.error_kind, result.error = "connection", exc.strerror or str(exc)
    result.elapsed_s = time.perf_counter() - started
    return result


async def _fetch(
    session: aiohttp.ClientSession, target: PollTarget, max_bytes: int, result: PollResult
) -> None:
    headers = {"Authorization": f"Bearer {target.token}", "Accept": "application/json"}
    url = target.url.rstrip("/") + "/v1/checkpoint"
    params = {"events_since": str(target.events_since)}
    async with session.get(url, headers=headers, params=params, allow_redirects=False) as response:
        body = await _read_limited(response, max_bytes)
        if body is None:
            result.error_kind = "too_large"
            result.error = f"checkpoint larger than {max_bytes} bytes"
            return
        result.payload = body
        if response.status != 200:
            result.error_kind = "http_status"
            result.error = _status_error(response.status)
            return
    _validate(body, target, result)


def _validate(body: bytes, target: PollTarget, result: PollResult) -> None:
    try:
        checkpoint = decode(body)
    except CheckpointError as exc:
        result.error_kind, result.error = "invalid_payload", f"invalid checkpoint: {exc}"
        return
    if checkpoint.host != target.name:
        result.error_kind = "wrong_host"
        result.error = f"agent reports host {checkpoint.host!r}, expected {target.name!r}"
        return
    result.checkpoint = checkpoint


async def _read_limited(response: aiohttp.ClientResponse, max_bytes: int) -> bytes | None:
    if response.content_length is not None and response.content_length > max_bytes:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _status_error(status: int) -> str:
    if status == 401:
        return "agent refused our token (401): check the host's agent token"
    return f"agent answered HTTP {status}"


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return f"{type(exc).__name__}: {exc}"


def excerpt(payload: bytes) -> str:
    """Return the start of a payload as text, for an ingest error record."""
    return payload[:EXCERPT_CHARS].decode("utf-8", errors="replace")
