"""Store a host's checkpoint as a poll would, analyse it and run the triggers: one step of
the control plane, on simulated time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.checkpoint import Checkpoint, decode, encode
from healing import triggers
from healing.models import Proposal
from monitor import analysis, ingest, polling
from monitor import healing as monitor_healing
from monitor.models import Host
from tests.factories import make_checkpoint

T0 = 1_790_000_000.0


def poll(
    host: Host,
    at: float,
    enqueued: list[int],
    edit: Callable[[Checkpoint], Checkpoint] | None = None,
    **changes: Any,
) -> list[Proposal]:
    """Store one checkpoint of `host` as a poll would, analyse it, and run the triggers;
    `edit` changes what make_checkpoint's arguments cannot reach."""
    host.refresh_from_db()
    target = polling.PollTarget(host_id=host.pk, name=host.name, url=host.agent_url, token="t")
    made = make_checkpoint(
        host=host.name, collected_at=at, engine_args={"max_num_seqs": 256}, **changes
    )
    cp = decode(encode(edit(made) if edit else made))
    now = datetime.fromtimestamp(at, tz=UTC)
    report = ingest.store_poll_results({host.pk: host}, [polling.PollResult(target, 0.01, cp)], now)
    watch = monitor_healing.Watch()
    findings = analysis.analyze_stored(report.checkpoints, now, observe=watch.observe)
    return triggers.handle(watch.fired(findings.checkpoints), now, enqueued.append)
