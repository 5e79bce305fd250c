"""Run requested actions one at a time, each at most once per idempotency key.

1. `submit()` checks the request: an idempotency key, a registered action, valid parameters.
   A refused request (ActionRefused, HTTP 400) consumes nothing, not even its key.
2. A key seen before returns the job it started, whatever its state: the same key twice
   executes once. The same key with another action or other parameters is a conflict.
3. Jobs run in the background, one at a time (two restarts must never interleave); a job
   waiting for its turn is `pending`, then `running`, then `succeeded` or `failed`.
4. Jobs and their keys are kept for `keep_s` and at most `max_jobs` of them; the agent
   forgets them when it restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agent.actions.base import Action, ActionContext, ActionError, ActionRefused, validate

log = logging.getLogger(__name__)

MAX_JOBS = 1000
KEEP_S = 24 * 3600.0
MAX_KEY_CHARS = 200


class ActionConflict(ActionRefused):
    """An idempotency key reused for a different request (HTTP 409)."""


@dataclass(slots=True)
class ActionJob:
    id: str
    action: str
    params: dict[str, Any]
    idempotency_key: str
    fingerprint: str
    created_at: float
    status: str = "pending"  # pending, running, succeeded, failed
    result: dict[str, Any] | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "params": self.params,
            "idempotency_key": self.idempotency_key,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class ActionExecutor:
    def __init__(
        self,
        registry: dict[str, Action],
        ctx: ActionContext,
        *,
        max_jobs: int = MAX_JOBS,
        keep_s: float = KEEP_S,
    ) -> None:
        self.registry = registry
        self.ctx = ctx
        self.max_jobs = max_jobs
        self.keep_s = keep_s
        self._jobs: OrderedDict[str, ActionJob] = OrderedDict()
        self._by_key: dict[str, ActionJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._turn = asyncio.Lock()

    def submit(self, request: Any) -> tuple[ActionJob, bool]:
        """Return the job for `request` and whether it is new; raise ActionRefused if refused."""
        name, raw_params, key = _parse_request(request)
        self._forget_old()
        fingerprint = json.dumps([name, raw_params], sort_keys=True)
        if (seen := self._by_key.get(key)) is not None:
            if seen.fingerprint != fingerprint:
                raise ActionConflict(
                    f"idempotency_key {key!r} was used for another request "
                    f"({seen.action} {json.dumps(seen.params, sort_keys=True)})"
                )
            return seen, False
        action = self._action(name)
        params = validate(action, raw_params)
        if reason := action.refusal(self.ctx, params):
            raise ActionRefused(f"{name}: {reason}")
        job = ActionJob(uuid.uuid4().hex, name, params, key, fingerprint, time.time())
        self._jobs[job.id] = self._by_key[key] = job
        task = asyncio.create_task(self._run(job, action), name=f"action {name} {job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job, True

    def get(self, job_id: str) -> ActionJob | None:
        return self._jobs.get(job_id)

    def recent(self, limit: int = 50) -> list[ActionJob]:
        """Return the newest jobs first."""
        return list(reversed(self._jobs.values()))[:limit]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _action(self, name: str) -> Action:
        action = self.registry.get(name)
        if action is None:
            available = ", ".join(sorted(self.registry))
            raise ActionRefused(f"unknown action {name!r}; available: {available}")
        return action

    async def _run(self, job: ActionJob, action: Action) -> None:
        async with self._turn:
            job.status, job.started_at = "running", time.time()
            self.ctx.vllm.logs.say(
                f"action {job.action} {job.id} started: {json.dumps(job.params)}"
            )
            try:
                job.result = await action.run(self.ctx, dict(job.params))
                job.status = "succeeded"
            except ActionError as exc:
                job.status, job.error = "failed", str(exc)
            except asyncio.CancelledError:
                job.status, job.error = "failed", "cancelled: the agent is stopping"
                raise
            except Exception as exc:
                log.exception("action %s %s failed", job.action, job.id)
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            finally:
                job.finished_at = time.time()
                self.ctx.vllm.logs.say(_outcome(job))

    def _forget_old(self) -> None:
        cutoff = time.time() - self.keep_s
        while self._jobs:
            oldest = next(iter(self._jobs.values()))
            too_many = len(self._jobs) >= self.max_jobs
            if not oldest.finished or not (too_many or oldest.created_at < cutoff):
                return
            del self._jobs[oldest.id]
            del self._by_key[oldest.idempotency_key]


def _outcome(job: ActionJob) -> str:
    if job.status == "succeeded":
        return f"action {job.action} {job.id} succeeded"
    return f"action {job.action} {job.id} failed: {job.error}"


def _parse_request(request: Any) -> tuple[str, Any, str]:
    if not isinstance(request, dict):
        raise ActionRefused(
            "the request must be a JSON object with action, params, idempotency_key"
        )
    unknown = sorted(set(request) - {"action", "params", "idempotency_key"})
    if unknown:
        raise ActionRefused(
            f"unknown request field {unknown[0]!r}; allowed: action, params, idempotency_key"
        )
    name, key = request.get("action"), request.get("idempotency_key")
    if not isinstance(name, str) or not name:
        raise ActionRefused("action must be the name of a registered action")
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
        raise ActionRefused(f"idempotency_key must be a string of 1 to {MAX_KEY_CHARS} characters")
    return name, request.get("params", {}), key
