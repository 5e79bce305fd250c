"""Load a big incident history into an empty, migrated database, in SQL on the server.

Used by bench/history. Nothing goes through the ORM row by row: each table is one
INSERT ... SELECT over generate_series (the checkpoints in chunks that commit on their own),
fed by small temporary tables of templates made from real data:

- checkpoints: real ones, recorded from the simulator's hosts by the real agent code
  (bench/replay_agents.py); 4,000 variants per model of them with their ~40 live figures
  varied, and each row one of those with its own host, seq and times, so the JSON stored and
  its TOAST compression are what the product stores;
- vLLM errors: the real error texts of tests/data/vllm_errors, classified by agent.exceptions;
- proposals: the shape a drill of the healing loop stores (plan, alternatives, evidence, gate,
  steps, metrics before and after), with the mitigation library's strategies and risks.

1. Hosts (a few models); the users (operators who decide and write) come from the caller.
2. Checkpoints, `interval_s` apart per host and ending now, oldest first, all hosts
   interleaved as polls store them; the table's indexes are dropped first and rebuilt after.
   At 5 s, 10 million checkpoints of 200 hosts are their last ~2.9 days: every host has a
   dense recent history, and the older incidents have none around them (raw checkpoints are
   kept for days, CHECKPOINT_RETENTION_DAYS), as in the product.
3. Incidents spread over `days`: host incidents, and fleet incidents (host NULL) with 2-5
   member host incidents of one model; most resolved with their figures, the latest of a
   host's failure type open or acknowledged when recent.
4. Predictions, lifecycle transitions, GPU events and vLLM errors around each incident, ~2
   proposals per host incident, notes, audit entries; then each incident's search text,
   built like healing.incidents.reindex (title, signals, notes, proposals, errors).
5. Sequences past the explicit ids, VACUUM ANALYZE.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# What the loaded data looks like; a database loaded by another format is loaded again.
# 1: the first.
LOAD_FORMAT = 1
MODELS = (
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "Qwen/Qwen2.5-32B-Instruct",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
)
ADMIN = "history-admin"
OPERATORS = ("alice", "carol", "dave", "erin", "frank")
VIEWER = "bob"
# Percent of incidents per failure type: memory and the KV cache fail most.
FAILURE_WEIGHTS = {
    "kv_cache_exhausted": 24,
    "cuda_oom": 16,
    "thermal_throttling": 9,
    "hang": 8,
    "nccl_error": 7,
    "engine_dead": 12,
    "gpu_hardware": 5,
    "system_resource": 8,
    "performance_degradation": 11,
}
# The vLLM error category each failure logs (tests/data/vllm_errors names them so).
ERROR_CATEGORY = {
    "kv_cache_exhausted": "kv_cache_exhausted",
    "cuda_oom": "cuda_oom",
    "thermal_throttling": "other",
    "hang": "worker_timeout_or_hang",
    "nccl_error": "nccl_error",
    "engine_dead": "engine_dead",
    "gpu_hardware": "cuda_illegal_access_or_xid",
    "system_resource": "system_resource",
    "performance_degradation": "tokenizer_or_request_error",
}
BACKGROUND_ERRORS = ("tokenizer_or_request_error", "network_or_port", "config_error", "other")
# The guardrail each failure type trips, with what its signal says.
GUARDRAILS = {
    "kv_cache_exhausted": (
        "kv_cache_near_full",
        "kv_cache_usage_pct 97.8 > 95, requests_waiting 41 > 10",
    ),
    "cuda_oom": ("gpu_memory_critical", "gpu_mem_used_pct 99.2 > 98.5 for 15 s"),
    "thermal_throttling": ("gpu_thermal", "gpu_temp_c 88 > 85 and gpu_throttled == 1"),
    "hang": ("deadlock", "forward_progress == 0 with 57 requests running for 30 s"),
    "nccl_error": ("worker_failure", "engine failed: NCCL collective timed out"),
    "engine_dead": ("worker_failure", "failed and state != 'failed_config'"),
    "gpu_hardware": ("gpu_hardware_error", "ecc_uncorrected 2 > 0, XID 79 reported"),
    "system_resource": (
        "high_error_rate",
        "requests_failed_per_s / requests_total_per_s 0.09 > 0.05",
    ),
    "performance_degradation": ("high_latency", "itl_p99_s 0.74 > 0.5 for 60 s"),
}
# Lifecycle transitions of an incident: (from, to, trigger, when as a share of its duration).
TRANSITIONS = {
    "crash": [
        ("serving", "failed_{}", "engine core died: {}", 0.05),
        ("failed_{}", "initializing", "restart by sentinel", 0.35),
        ("initializing", "loading_weights", "Starting to load model {model}...", 0.4),
        ("loading_weights", "serving", "Application startup complete.", 0.7),
    ],
    "drain": [
        ("serving", "draining", "drain requested by sentinel", 0.2),
        ("draining", "stopped", "drained: 0 requests left", 0.3),
    ],
    "degrade": [
        ("serving", "degraded", "{}", 0.05),
        ("degraded", "serving", "recovered", 0.8),
    ],
}
CRASH_STATE = {
    "cuda_oom": "cuda_oom",
    "engine_dead": "engine_dead",
    "hang": "hang",
    "nccl_error": "nccl",
}
NOTES = (
    "Looking at it: the batch on this host has grown since this morning's deploy.",
    "Same pattern as last week's OOM on the 70B replicas; checking max_num_seqs.",
    "Customer traffic spike from the eval team, expected to end within the hour.",
    "Drained and restarted by hand; the new driver is on the host since 14:00.",
    "Checked dmesg: XID 79, the GPU fell off the bus. Ticket opened with the DC team.",
    "Preemptions stopped after lowering max_num_batched_tokens to 4096.",
    "Not reproducible; keeping an eye on the KV cache usage for a day.",
    "NCCL timeouts on the same rack as yesterday: suspect the switch, not vLLM.",
    "Vetoed the restart: it is peak hour and the host still answers within SLO.",
    "Rolled back the tokenizer change; errors gone.",
)
RESOLUTIONS = (
    "Restarted vLLM with a lower gpu_memory_utilization (0.85).",
    "Moved the long-context tenant to its own replica.",
    "Replaced the GPU; host back in the pool.",
    "Fixed the NCCL_SOCKET_IFNAME on the host and restarted.",
    "Load went back to normal by itself; nothing to do.",
    "Reverted to the previous vLLM image.",
)
VETO_REASONS = (
    "peak hour: not restarting now",
    "the host is being drained for maintenance anyway",
    "prefer lowering the batch limits first",
    "the failure is in the client, not the server",
)
FAILED_ERRORS = (
    "agent {host}: restart timed out after 120 s (vLLM did not report healthy)",
    "agent {host}: connection refused on :9300",
    "agent {host}: drain did not finish within 60 s; 17 requests still running",
)
# The figures a proposal records before and after its mitigation (healing/verification.py).
METRICS = {
    "e2e_p99_s": 39.55,
    "gpu_count": 1.0,
    "health_ok": 1.0,
    "itl_p50_s": 0.0647,
    "itl_p99_s": 0.1908,
    "gpu_temp_c": 55.0,
    "ttft_p99_s": 2.325,
    "gpu_power_w": 638.28,
    "queue_p99_s": 0.991,
    "gpu_util_pct": 99.0,
    "gpu_throttled": 0.0,
    "http_5xx_per_s": 0.0,
    "ecc_uncorrected": 0.0,
    "forward_progress": 1.0,
    "gpu_mem_used_pct": 93.4505,
    "gpu_sm_clock_mhz": 1980.0,
    "process_open_fds": 308.0,
    "requests_running": 84.0,
    "requests_waiting": 5.0,
    "preemptions_per_s": 0.0,
    "process_rss_bytes": 5776731012.0,
    "gpu_mem_used_bytes": 79919610593.0,
    "kv_cache_usage_pct": 35.0185,
    "gpu_mem_total_bytes": 85520809984.0,
    "prompt_tokens_per_s": 6124.3,
    "requests_total_per_s": 2.7,
    "requests_failed_per_s": 0.0,
    "generation_tokens_per_s": 1026.7,
    "requests_finished_per_s": 2.7,
}
CHECKPOINT_CHUNK_ROWS = 400_000
POOL_VARIANTS = 4000  # checkpoints made per model, that the stored rows are made from
LIVE_PREFIXES = ("vllm.", "gpus.", "process.rss_bytes", "process.cpu_pct")
FIXED_LEAVES = (
    "vllm.cache.",
    "vllm.interval_s",
    "vllm.api_server.start_time",
    "memory_total_bytes",
    "power_limit_w",
)
_MARK = "@@{}@@"


@dataclass(frozen=True)
class Scale:
    hosts: int
    checkpoints: int
    incidents: int
    days: float
    interval_s: float


Say = Callable[[str], None]


def load(conn: Any, scale: Scale, users: dict[str, int], say: Say) -> dict[str, float]:
    """Load everything; return seconds per step. `conn` is a psycopg connection (autocommit,
    client-side binding) to the migrated bench database; `users` maps usernames to ids."""
    seconds: dict[str, float] = {}
    end = math.floor(time.time())

    def step(name: str, fn: Callable[[], Any]) -> None:
        started = time.perf_counter()
        fn()
        seconds[name] = time.perf_counter() - started
        say(f"  {name}: {seconds[name]:.0f} s")

    conn.execute("SELECT setseed(0.42)")
    step("templates", lambda: _templates(conn, users))
    step("hosts", lambda: _hosts(conn, scale, end))
    step("checkpoints", lambda: _checkpoints(conn, scale, end, say))
    step("incidents", lambda: _incidents(conn, scale, end))
    step("predictions, transitions, errors", lambda: _host_history(conn, scale, end))
    step("proposals", lambda: _proposals(conn))
    step("notes and audit", lambda: _notes_and_audit(conn))
    step("search text", lambda: _search(conn, end))
    step("vacuum analyze", lambda: _finish(conn))
    return seconds


# ---------------------------------------------------------------- templates


def record_checkpoints() -> list[dict[str, Any]]:
    """Return checkpoints that real agents collected from simulated hosts, as JSON objects."""
    import asyncio
    import importlib.util

    from agent.checkpoint import encode, replace

    spec = importlib.util.spec_from_file_location("replay_agents", ROOT / "bench/replay_agents.py")
    assert spec and spec.loader
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    logging.disable(logging.INFO)  # the simulated hosts' and agents' chatter
    try:
        recorded = asyncio.run(replay.record(seconds=60))
    finally:
        logging.disable(logging.NOTSET)
    # Events (transitions, errors, validations) are sent once, not in every checkpoint.
    return [
        json.loads(encode(replace(cp, transitions=[], errors=[], gpu_events=[], validations=[])))
        for cp in recorded
    ]


def live_paths(cps: list[dict[str, Any]]) -> list[str]:
    """Return the paths of the figures that change from one checkpoint to the next: the
    floats under LIVE_PREFIXES (not the fixed ones) that every template has, non-zero in one."""
    leaves = [dict(_float_leaves(cp, "")) for cp in cps]
    shared = set(leaves[0]).intersection(*leaves[1:])
    return [
        path
        for path in leaves[0]
        if path in shared
        and path.startswith(LIVE_PREFIXES)
        and not any(f in path for f in FIXED_LEAVES)
        and any(leaf[path] for leaf in leaves)
    ]


def checkpoint_format(cp: dict[str, Any], paths: list[str]) -> tuple[str, list[float]]:
    """Return `cp` as a format() string, and the values at `paths`.

    Arguments 1-5 are host, model, seq, collected_at and agent_started_at; the figures at
    `paths` follow, in that order.
    """
    doc = json.loads(json.dumps(cp))
    values = [dict(_float_leaves(doc, ""))[path] for path in paths]
    doc["host"], doc["seq"] = _MARK.format(1), _MARK.format(3)
    doc["collected_at"], doc["agent_started_at"] = _MARK.format(4), _MARK.format(5)
    if doc.get("vllm"):
        doc["vllm"]["model_name"] = _MARK.format(2)
    for n, path in enumerate(paths, start=6):
        _set(doc, path, _MARK.format(n))
    return _format_string(doc, strings=(1, 2)), values


def _format_string(doc: Any, strings: tuple[int, ...]) -> str:
    """Return `doc` as JSON for format(): markers that are a whole value become %N$s (quoted
    for the `strings` arguments), markers inside a text are replaced in place."""
    text = json.dumps(doc).replace("%", "%%")

    def whole(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return f'"%{n}$s"' if n in strings else f"%{n}$s"

    text = re.sub(r'"@@(\d+)@@"', whole, text)
    return re.sub(r"@@(\d+)@@", lambda m: f"%{m.group(1)}$s", text)


def _float_leaves(node: Any, path: str) -> Iterator[tuple[str, float]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _float_leaves(value, f"{path}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _float_leaves(value, f"{path}{i}.")
    elif isinstance(node, float):
        yield path[:-1], node


def _set(doc: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    if isinstance(doc, list):
        doc[int(last)] = value
    else:
        doc[last] = value


def _live_sql(paths: list[str], values: list[float], k: str) -> list[str]:
    """SQL for each live figure of a checkpoint: counters grow with the number `k`, others
    wander ±10 % around the template's value (percentages up to 100), printed with the
    template's precision."""
    exprs = []
    for i, (path, value) in enumerate(zip(paths, values, strict=True), start=1):
        base = f"t.base[{i}]"
        if ".totals." in path or path.endswith("cpu_s"):
            exprs.append(f"round({base} * (1 + {k} / 720.0))::bigint::text")
            continue
        wander = f"{base} * (0.9 + 0.2 * random())"
        if path.endswith("_pct") and not path.endswith("cpu_pct"):
            wander = f"least(100.0, {wander})"
        decimals = len(repr(value).split(".")[1]) if "." in repr(value) else 0
        if value.is_integer():
            exprs.append(f"round({wander})::bigint::text")
        elif decimals <= 6:
            exprs.append(f"round(({wander})::numeric, {decimals})::text")
        else:
            exprs.append(f"({wander})::text")
    return exprs


def error_templates() -> list[dict[str, Any]]:
    """Return the real vLLM error texts of tests/data/vllm_errors, classified."""
    from agent.exceptions import classify

    found = []
    for path in sorted((ROOT / "tests/data/vllm_errors").glob("*.txt")):
        text = "\n".join(
            line for line in path.read_text().splitlines() if not line.startswith("# ")
        ).strip()
        c = classify(text)
        found.append(
            {
                "category": str(c.category),
                "message": c.message[:5000],
                "signature": c.signature[:500],
                "traceback": text[:20000],
                "fields": json.dumps(c.fields),
            }
        )
    return found


def proposal_format() -> str:
    """Return one proposal's JSON columns as a format() string: 1 host, 2 strategy,
    3 alternative, 4 confidence, 5 the alternative's, 6-8 batch limits, then the metrics
    before and after (METRICS' keys, twice)."""
    n = 8
    before = {k: f"@@{n + i}@@" for i, k in enumerate(METRICS, start=1)}
    after = {k: f"@@{n + len(METRICS) + i}@@" for i, k in enumerate(METRICS, start=1)}
    verification = {
        "text": "within 300 s: gpu_throttled < 0.5, no thermal_throttling",
        "recover": [["gpu_throttled", "<", 0.5]],
        "within_s": 300.0,
        "must_not_happen": ["thermal_throttling"],
    }
    steps = [
        {"host": None, "action": "drain", "params": {"timeout_s": 60.0}},
        {
            "host": None,
            "action": "restart_with_args",
            "params": {"max_num_seqs": "@@6@@", "max_num_batched_tokens": "@@7@@"},
        },
    ]
    plan = {
        "steps": steps,
        "reason": "batch limits 1024 seqs / 8192 tokens cut by a third",
        "duration_s": 64.0,
        "verification": verification,
        "capacity_cost": 1.0,
    }
    gate = [
        {"ok": ok, "name": name, "detail": detail}
        for ok, name, detail in (
            (False, "confidence", "confidence @@4@@ under the medium-risk threshold 0.90"),
            (True, "enabled", "@@2@@ is not enabled for automatic execution"),
            (True, "paused", "not paused"),
            (True, "cooldown", "@@1@@ was mitigated @@8@@ s ago (cooldown 600 s)"),
            (True, "rate_limit", "@@2@@ ran 2 times in 60 min (limit 10)"),
            (True, "blast_radius", "1% of the fleet's capacity would be out at once (budget 25%)"),
            (
                True,
                "hosts_per_model",
                "0 other host(s) of the model are being mitigated (at most 1)",
            ),
            (True, "strategy_breaker", "@@2@@ failed 0 of its last 10 runs: its breaker is open"),
            (True, "host_breaker", "@@1@@ was mitigated 1 times in 30 min (0 failed)"),
        )
    ]
    job = {
        "job": "6bd0fa7e8d934bbdb74ee19e6383763a",
        "host": "@@1@@",
        "step": 0,
        "action": "drain",
        "result": {
            "note": "stopped vLLM with SIGTERM after draining",
            "method": "sigterm",
            "drained": True,
            "returncode": 0,
        },
        "finished_at": 1795785381.0710018,
    }
    doc = {
        "plan": plan,
        "alternatives": [
            {
                "why": "no history here yet: the library's order (P(works) 0.67)",
                "plan": plan,
                "risk": "medium",
                "params": {},
                "strategy": "@@3@@",
                "confidence": "@@5@@",
            }
        ],
        "evidence": {
            "why": "ranked by the learner",
            "detail": "predicted",
            "errors": [],
            "metrics": before,
            "trigger": "prediction",
            "forecast": ["kv_cache_usage_pct reaches kv_cache_high at 13:19:06 UTC"],
            "not_possible": {
                "scale_workers": "no spare capacity: no sleeping replica "
                "of the model on another host; add one, or lower the load"
            },
        },
        "gate": gate,
        "steps_done": [job, {**job, "step": 1, "action": "restart_with_args"}],
        "metrics_before": before,
        "metrics_after": after,
    }
    return _format_string(doc, strings=(1, 2, 3))


def _templates(conn: Any, users: dict[str, int]) -> None:
    conn.execute("CREATE TEMP TABLE bench_user (n int, id bigint, username text)")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO bench_user VALUES (%s, %s, %s)",
            [(n, users[name], name) for n, name in enumerate(OPERATORS)],
        )
    conn.execute(
        "CREATE TEMP TABLE bench_error (n int, category text, cat_n int, "
        "message text, signature text, traceback text, fields jsonb)"
    )
    rows = error_templates()
    by_category: dict[str, int] = {}
    with conn.cursor() as cur:
        for i, e in enumerate(rows):
            cat_n = by_category.get(e["category"], 0)
            by_category[e["category"]] = cat_n + 1
            cur.execute(
                "INSERT INTO bench_error VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    i,
                    e["category"],
                    cat_n,
                    e["message"],
                    e["signature"],
                    e["traceback"],
                    e["fields"],
                ),
            )
    conn.execute("CREATE TEMP TABLE bench_category (category text, n int)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO bench_category VALUES (%s, %s)", list(by_category.items()))
    _failure_table(conn)
    _transition_table(conn)


def _failure_table(conn: Any) -> None:
    from learning.prediction import RECOMMENDED_MITIGATIONS
    from mitigations.registry import STRATEGIES

    conn.execute(
        "CREATE TEMP TABLE bench_failure (failure_type text, strategies text[], "
        "risks text[], category text, guardrail text, guard_detail text, kind text)"
    )
    with conn.cursor() as cur:
        for failure, strategies in RECOMMENDED_MITIGATIONS.items():
            kind = (
                "crash"
                if failure in CRASH_STATE
                else "drain"
                if failure == "gpu_hardware"
                else "degrade"
            )
            cur.execute(
                "INSERT INTO bench_failure VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    failure,
                    list(strategies),
                    [str(STRATEGIES[s].risk) for s in strategies],
                    ERROR_CATEGORY[failure],
                    *GUARDRAILS[failure],
                    kind,
                ),
            )


# ---------------------------------------------------------------- hosts and checkpoints


def _hosts(conn: Any, scale: Scale, end: int) -> None:
    from agent.checkpoint import decode
    from monitor.summary import summarize

    cps = record_checkpoints()
    latest = summarize(decode(json.dumps(cps[0])))
    span_s = _checkpoint_span_s(scale)
    conn.execute(
        "INSERT INTO monitor_host (name, agent_url, agent_token, model_name, enabled, created_at,"
        " status, status_reason, lifecycle_state, last_seen_at, last_polled_at, latest,"
        " events_seen, risk, top_prediction) "
        "SELECT 'gpu-' || lpad(n::text, 3, '0'), 'http://gpu-' || lpad(n::text, 3, '0') || ':9300',"
        " 'bench-token', (%(models)s::text[])[1 + (n - 1) %% %(nmodels)s], true,"
        " to_timestamp(%(start)s), 'up', '', 'serving', to_timestamp(%(end)s),"
        " to_timestamp(%(end)s), %(latest)s::jsonb, 0, 0.0, '{}'::jsonb "
        "FROM generate_series(1, %(hosts)s) n ORDER BY n",
        {
            "models": list(MODELS),
            "nmodels": len(MODELS),
            "hosts": scale.hosts,
            "start": end - max(scale.days * 86400, span_s) - 86400,
            "end": end,
            "latest": json.dumps(latest),
        },
    )
    conn.execute(
        "CREATE TEMP TABLE bench_host AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS n,"
        " name, model_name, array_position(%(models)s::text[], model_name) - 1 AS model_n,"
        " row_number() OVER (PARTITION BY model_name ORDER BY id) - 1 AS rank,"
        " count(*) OVER (PARTITION BY model_name) AS model_hosts FROM monitor_host",
        {"models": list(MODELS)},
    )
    conn.execute("ALTER TABLE bench_host ADD COLUMN offset_s float8, ADD COLUMN started_at float8")
    conn.execute(
        "UPDATE bench_host SET offset_s = (n %% 50) * 0.1, started_at = %(start)s - n * 37",
        {"start": end - span_s - 60},
    )
    _checkpoint_templates(conn, cps)


def _checkpoint_templates(conn: Any, cps: list[dict[str, Any]]) -> None:
    """Make POOL_VARIANTS checkpoints per model from the templates, their live figures varied.

    Each stored row is one of these with its own host, seq and times set on top: making and
    compressing every row's JSON from text costs ~1 ms a row here, this about half of it.
    """
    paths = live_paths(cps)
    conn.execute("CREATE TEMP TABLE bench_template (n int, fmt text, base float8[])")
    with conn.cursor() as cur:
        for n, cp in enumerate(cps):
            fmt, values = checkpoint_format(cp, paths)
            cur.execute("INSERT INTO bench_template VALUES (%s, %s, %s)", (n, fmt, values))
    live = _live_sql(paths, checkpoint_format(cps[0], paths)[1], k="v")
    conn.execute(
        "CREATE TEMP TABLE bench_pool AS SELECT m * %(variants)s + v AS n,"
        " format(t.fmt, 'gpu-000', (%(models)s::text[])[m + 1], 0, 0, 0, "
        + ", ".join(live)
        + ")::jsonb AS doc FROM generate_series(0, %(nmodels)s - 1) m"
        " CROSS JOIN generate_series(0, %(variants)s - 1) v"
        " JOIN bench_template t ON t.n = v %% %(templates)s",
        {
            "variants": POOL_VARIANTS,
            "models": list(MODELS),
            "nmodels": len(MODELS),
            "templates": len(cps),
        },
    )
    conn.execute("ALTER TABLE bench_pool ADD PRIMARY KEY (n)")
    conn.execute("ANALYZE bench_pool")
    _check_pool(conn)


def _check_pool(conn: Any) -> None:
    """Stop if the agent's own decoder refuses a made checkpoint: the pages would fail too."""
    from agent.checkpoint import decode

    rows = conn.execute("SELECT doc::text FROM bench_pool ORDER BY random() LIMIT 500")
    for (text,) in rows.fetchall():
        decode(text)


def _checkpoint_span_s(scale: Scale) -> float:
    return math.ceil(scale.checkpoints / scale.hosts) * scale.interval_s


def estimate_checkpoint_bytes(conn: Any, scale: Scale) -> float:
    """Return the bytes one checkpoint row takes (heap and TOAST), from 2,000 made the same
    way into a temporary table."""
    conn.execute(
        "CREATE TEMP TABLE bench_sample"
        " (LIKE monitor_checkpoint INCLUDING DEFAULTS INCLUDING IDENTITY)"
    )
    conn.execute(_checkpoint_insert("bench_sample"), _chunk_params(scale, 0, 9, 0))
    conn.execute("VACUUM bench_sample")
    size, rows = conn.execute(
        "SELECT pg_total_relation_size('bench_sample'), count(*) FROM bench_sample"
    ).fetchone()
    conn.execute("DROP TABLE bench_sample")
    return float(size) / max(int(rows), 1)


def _checkpoints(conn: Any, scale: Scale, end: int, say: Say) -> None:
    per_host = math.ceil(scale.checkpoints / scale.hosts)
    _check_disk(conn, scale, say)
    steps = max(1, CHECKPOINT_CHUNK_ROWS // scale.hosts)
    indexes = _drop_indexes(conn, "monitor_checkpoint")
    sql = _checkpoint_insert("monitor_checkpoint")
    started = time.perf_counter()
    for k0 in range(0, per_host, steps):
        k1 = min(per_host, k0 + steps) - 1
        conn.execute(sql, _chunk_params(scale, k0, k1, end))
        done = (k1 + 1) * scale.hosts
        rate = done / (time.perf_counter() - started)
        say(
            f"    {done:,} checkpoints, {rate:,.0f}/s, "
            f"~{(per_host * scale.hosts - done) / rate / 60:.0f} min left"
        )
    conn.execute("SET maintenance_work_mem = '512MB'")  # this session's index builds only
    for ddl in indexes:
        conn.execute(ddl)


def _check_disk(conn: Any, scale: Scale, say: Say) -> None:
    """Say how much room the checkpoints will take; stop when the server's disk is too small."""
    row_bytes = estimate_checkpoint_bytes(conn, scale)
    need = row_bytes * scale.checkpoints * 1.05  # and the (host, collected_at) index
    free = _free_bytes(conn)
    say(
        f"    ~{row_bytes:,.0f} B per checkpoint on disk: ~{need / 1e9:.1f} GB for "
        f"{scale.checkpoints:,}" + (f" ({free / 1e9:.0f} GB free)" if free else "")
    )
    if free is not None and need > free - 5e9:
        raise SystemExit(
            f"{need / 1e9:.1f} GB of checkpoints do not fit in the {free / 1e9:.0f} GB free "
            "(keeping 5 GB spare): lower --checkpoints"
        )


def _free_bytes(conn: Any) -> float | None:
    """Free bytes on the server's data disk, when the server is on this machine."""
    import shutil

    try:
        (path,) = conn.execute("SHOW data_directory").fetchone()
        return float(shutil.disk_usage(path).free)
    except Exception:  # another machine, or no right to read the setting: say nothing
        return None


def _checkpoint_insert(table: str) -> str:
    return (
        f"INSERT INTO {table} (host_id, collected_at, received_at, lifecycle_state, data) "
        "SELECT s.id, to_timestamp(s.at), to_timestamp(s.at + 0.02 + 0.05 * random()),"
        " 'serving', p.doc || jsonb_build_object('host', s.name, 'seq', s.k + 1,"
        " 'collected_at', round(s.at::numeric, 3), 'agent_started_at', s.started_at)"
        " FROM (SELECT k, h.id, h.name, h.started_at,"
        " h.model_n * %(variants)s + (k * 7919 + h.n * 104729) %% %(variants)s AS pool_n,"
        " %(end)s - (%(last)s - k) * %(interval)s - h.offset_s AS at"
        " FROM generate_series(%(k0)s, %(k1)s) k CROSS JOIN bench_host h"
        " ORDER BY k, h.id) s JOIN bench_pool p ON p.n = s.pool_n"
    )


def _chunk_params(scale: Scale, k0: int, k1: int, end: int) -> dict[str, Any]:
    last = math.ceil(scale.checkpoints / scale.hosts) - 1
    return {
        "k0": k0,
        "k1": k1,
        "last": last,
        "interval": scale.interval_s,
        "end": end or time.time(),
        "variants": POOL_VARIANTS,
    }


def _drop_indexes(conn: Any, table: str) -> list[str]:
    """Drop `table`'s secondary indexes; return the statements that make them again."""
    rows = conn.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = %s AND NOT EXISTS"
        " (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        (table,),
    ).fetchall()
    for name, _ in rows:
        conn.execute(f'DROP INDEX "{name}"')
    return [ddl for _, ddl in rows]


# ---------------------------------------------------------------- incidents


def _incidents(conn: Any, scale: Scale, end: int) -> None:
    fleets = max(1, scale.incidents // 20)
    members = sum(2 + g % 4 for g in range(1, fleets + 1))
    standalone = max(0, scale.incidents - fleets - members)
    weighted = [f for f, w in FAILURE_WEIGHTS.items() for _ in range(w)]
    params = {
        "fleets": fleets,
        "standalone": standalone,
        "end": end,
        "span": scale.days * 86400,
        "models": len(MODELS),
        "hosts": scale.hosts,
        "failures": weighted,
        "nfail": len(weighted),
    }
    for sql in _STAGE_SQL:
        conn.execute(sql, params)
    for sql in _SHAPE_SQL:
        conn.execute(sql, params)
    texts = {"resolutions": list(RESOLUTIONS), "nres": len(RESOLUTIONS)}
    conn.execute(_INCIDENT_INSERT, {"models": list(MODELS), "end": end, **texts})
    conn.execute("CREATE INDEX ON bench_incident (id)")
    conn.execute("ANALYZE bench_incident")


_STAGE_SQL = (
    """CREATE TEMP TABLE bench_fleet AS
    SELECT g AS n, g %% %(models)s AS model_n, %(end)s - random() * %(span)s AS opened,
           (%(failures)s::text[])[1 + floor(random() * %(nfail)s)::int] AS failure_type,
           2 + g %% 4 AS members
    FROM generate_series(1, %(fleets)s) g""",
    """CREATE TEMP TABLE bench_stage AS
    SELECT 'fleet'::text AS kind, f.n::bigint AS key, NULL::bigint AS parent_key,
           NULL::bigint AS host_id, f.model_n, f.failure_type, f.opened
    FROM bench_fleet f
    UNION ALL
    SELECT 'member', 10000000 + f.n * 10 + j, f.n, h.id, f.model_n, f.failure_type,
           f.opened + (j - 1) * 20 + random() * 15
    FROM bench_fleet f CROSS JOIN LATERAL generate_series(1, f.members) j
    JOIN bench_host h ON h.model_n = f.model_n AND h.rank = (f.n * 7 + j) %% h.model_hosts
    UNION ALL
    SELECT 'host', 20000000 + i, NULL, h.id, h.model_n, s.failure_type, s.opened
    FROM (SELECT i, floor(random() * %(hosts)s)::int AS host_n,
                 (%(failures)s::text[])[1 + floor(random() * %(nfail)s)::int] AS failure_type,
                 %(end)s - random() * %(span)s AS opened
          FROM generate_series(1, %(standalone)s) i) s
    JOIN bench_host h ON h.n = s.host_n""",
    """CREATE TEMP TABLE bench_incident AS
    SELECT row_number() OVER (ORDER BY opened, key) AS id, s.*, NULL::bigint AS parent_id,
           (ARRAY['info', 'warning', 'warning', 'warning', 'critical', 'critical'])
               [1 + floor(random() * 6)::int] AS severity,
           'resolved'::text AS state,
           60 + 7200 * power(random(), 3) AS recover_s,
           (ARRAY['automatic', 'automatic', 'approval', 'approval', 'approval', 'hand',
                  'itself', 'itself'])[1 + floor(random() * 8)::int] AS healed_by,
           random() < 0.55 AS predicted, random() < 0.7 AS failed, random() < 0.4 AS acked,
           random() < 0.6 AS guarded, random() < 0.03 AS reopened,
           CASE WHEN random() < 0.3 THEN 1 + floor(random() * 3)::int ELSE 0 END AS notes,
           30 + 900 * random() AS lead_s, 5 + 55 * random() AS detect_s,
           20 + 580 * random() AS mitigate_s, random() AS r1, random() AS r2
    FROM bench_stage s""",
)
_SHAPE_SQL = (
    """UPDATE bench_incident m SET parent_id = p.id FROM bench_incident p
    WHERE m.kind = 'member' AND p.kind = 'fleet' AND p.key = m.parent_key""",
    # The latest incident of a host's failure type, when recent, is still open.
    """UPDATE bench_incident SET state = CASE WHEN r1 < 0.6 THEN 'open' ELSE 'acknowledged' END,
           healed_by = ''
    WHERE id IN (SELECT DISTINCT ON (host_id, failure_type) id FROM bench_incident
                 WHERE host_id IS NOT NULL ORDER BY host_id, failure_type, opened DESC)
      AND opened > %(end)s - 6 * 3600""",
    "UPDATE bench_incident SET recover_s = (%(end)s - opened) * 0.9 "
    "WHERE state = 'resolved' AND opened + recover_s > %(end)s",
    """UPDATE bench_incident f SET recover_s = m.recover_s, severity = m.severity,
           state = m.state, healed_by = m.healed_by
    FROM (SELECT parent_id, max(recover_s) AS recover_s,
                 (array_agg(severity ORDER BY CASE severity WHEN 'critical' THEN 2
                  WHEN 'warning' THEN 1 ELSE 0 END DESC))[1] AS severity,
                 CASE WHEN bool_or(state <> 'resolved') THEN 'open' ELSE 'resolved' END AS state,
                 CASE WHEN bool_or(state <> 'resolved') THEN '' ELSE min(healed_by) END
                     AS healed_by
          FROM bench_incident WHERE parent_id IS NOT NULL GROUP BY parent_id) m
    WHERE f.id = m.parent_id""",
    "ALTER TABLE bench_incident ADD COLUMN n_prop int",
    # About two proposals per host incident; one that was healed by one has at least one.
    """UPDATE bench_incident SET n_prop = CASE
           WHEN host_id IS NULL THEN 0
           WHEN healed_by IN ('automatic', 'approval') OR state <> 'resolved'
               THEN 1 + floor(r2 * 3)::int
           ELSE floor(r2 * 5)::int END""",
)
_INCIDENT_INSERT = """
INSERT INTO healing_incident (id, host_id, parent_id, model_name, failure_type, severity, state,
    title, opened_at, updated_at, last_signal_at, signals, acknowledged_at, acknowledged_by_id,
    resolved_at, resolved_by_id, resolution, reopened, first_predicted_at, failed_at,
    mitigated_at, lead_time_s, detect_s, mitigate_s, recover_s, healed_by, search)
SELECT i.id, i.host_id, i.parent_id, (%(models)s::text[])[i.model_n + 1], i.failure_type,
    i.severity, i.state,
    CASE WHEN i.kind = 'fleet'
         THEN replace(i.failure_type, '_', ' ') || ' on ' || (2 + i.key %% 4) || ' hosts of '
              || (%(models)s::text[])[i.model_n + 1]
         ELSE replace(i.failure_type, '_', ' ') || ' on ' || h.name END,
    to_timestamp(i.opened),
    to_timestamp(CASE WHEN i.state = 'resolved' THEN i.opened + i.recover_s
                      ELSE least(%(end)s, i.opened + 0.8 * i.recover_s) END),
    to_timestamp(least(%(end)s, i.opened + 0.8 * i.recover_s)),
    CASE WHEN i.kind = 'fleet' THEN '[]'::jsonb ELSE
        (CASE WHEN i.predicted THEN jsonb_build_array(jsonb_build_object(
            'at', i.opened, 'kind', 'prediction', 'name', 'prediction:' || i.id,
            'detail', i.failure_type || ' predicted, p=' || round((0.6 + 0.4 * i.r1)::numeric, 2)))
         ELSE '[]'::jsonb END)
        || (CASE WHEN i.guarded OR NOT i.predicted THEN jsonb_build_array(jsonb_build_object(
            'at', i.opened + 30 * i.r2, 'kind', 'guardrail', 'name', 'guardrail:' || f.guardrail,
            'detail', f.guard_detail)) ELSE '[]'::jsonb END) END,
    CASE WHEN i.acked OR i.state = 'acknowledged'
         THEN to_timestamp(i.opened + least(120 + 600 * i.r1, 0.5 * i.recover_s)) END,
    CASE WHEN i.acked OR i.state = 'acknowledged' THEN ack.id END,
    CASE WHEN i.state = 'resolved' THEN to_timestamp(i.opened + i.recover_s) END,
    CASE WHEN i.state = 'resolved' AND i.healed_by = 'hand' THEN res.id END,
    CASE WHEN i.state = 'resolved' AND i.healed_by = 'hand'
         THEN (%(resolutions)s::text[])[1 + (i.id %% %(nres)s)] ELSE '' END,
    CASE WHEN i.reopened THEN 1 ELSE 0 END,
    CASE WHEN i.state = 'resolved' AND i.predicted THEN to_timestamp(i.opened) END,
    CASE WHEN i.state = 'resolved' AND i.failed THEN to_timestamp(
        CASE WHEN i.predicted THEN i.opened + i.lead_s ELSE i.opened - i.detect_s END) END,
    CASE WHEN i.state = 'resolved' AND i.n_prop > 0 THEN to_timestamp(i.opened + i.mitigate_s) END,
    CASE WHEN i.state = 'resolved' AND i.predicted AND i.failed THEN i.lead_s END,
    CASE WHEN i.state = 'resolved' AND i.failed
         THEN CASE WHEN i.predicted THEN 0 ELSE i.detect_s END END,
    CASE WHEN i.state = 'resolved' AND i.n_prop > 0 THEN i.mitigate_s END,
    CASE WHEN i.state = 'resolved' THEN i.recover_s END,
    i.healed_by, NULL
FROM bench_incident i
LEFT JOIN bench_host h ON h.id = i.host_id
LEFT JOIN bench_failure f ON f.failure_type = i.failure_type
LEFT JOIN bench_user ack ON ack.n = i.id %% 5
LEFT JOIN bench_user res ON res.n = (i.id / 7) %% 5
ORDER BY i.id"""


# ---------------------------------------------------------------- around each incident


def _host_history(conn: Any, scale: Scale, end: int) -> None:
    extra = {
        "end": end,
        "span": scale.days * 86400,
        "lapsed": scale.incidents // 2,
        "background": scale.incidents // 2,
        "hosts": scale.hosts,
        "first_lapsed": scale.incidents + 1,
        "background_categories": list(BACKGROUND_ERRORS),
    }
    for sql in _HISTORY_SQL:
        conn.execute(sql, extra)


_HISTORY_SQL = (
    # A prediction per predicted host incident (its id is the one the signal names), and as
    # many again that lapsed.
    """INSERT INTO monitor_prediction (id, host_id, failure_type, probability, confidence,
        time_to_failure_s, expected_failure_at, evidence, recommended_mitigations,
        first_predicted_at, updated_at, closed_at, outcome)
    SELECT i.id, i.host_id, i.failure_type, 0.6 + 0.4 * i.r1, 0.5 + 0.4 * i.r2, i.lead_s,
        to_timestamp(i.opened + i.lead_s),
        jsonb_build_array(
            jsonb_build_object('value', i.lead_s, 'source', 'detector:' || i.failure_type,
                'detail', replace(i.failure_type, '_', ' ') || ' in ~' || round(i.lead_s / 60)
                          || ' min at the current trend'),
            jsonb_build_object('value', i.lead_s, 'source', 'forecast:kv_cache_usage_pct',
                'detail', 'kv_cache_usage_pct forecast to reach kv_cache_full in '
                          || round(i.lead_s) || ' s')),
        to_jsonb(f.strategies), to_timestamp(i.opened), to_timestamp(i.opened + i.lead_s),
        CASE WHEN i.state = 'resolved' THEN to_timestamp(i.opened + i.lead_s + 60) END,
        CASE WHEN i.state = 'resolved' THEN CASE WHEN i.failed THEN 'happened' ELSE 'lapsed' END
             ELSE '' END
    FROM bench_incident i JOIN bench_failure f USING (failure_type)
    WHERE i.predicted AND i.host_id IS NOT NULL ORDER BY i.id""",
    """INSERT INTO monitor_prediction (id, host_id, failure_type, probability, confidence,
        time_to_failure_s, expected_failure_at, evidence, recommended_mitigations,
        first_predicted_at, updated_at, closed_at, outcome)
    SELECT %(first_lapsed)s + s.n, h.id, f.failure_type, 0.3 + 0.4 * random(), 0.5, 300,
        to_timestamp(s.at + 300),
        jsonb_build_array(jsonb_build_object('value', 300, 'source', 'pattern:v3',
            'detail', 'looks like the start of ' || f.failure_type)),
        to_jsonb(f.strategies), to_timestamp(s.at), to_timestamp(s.at + 60),
        to_timestamp(s.at + 120), 'lapsed'
    FROM (SELECT n, %(end)s - random() * %(span)s AS at, floor(random() * %(hosts)s)::int
                 AS host_n, floor(random() * 9)::int AS f_n
          FROM generate_series(1, %(lapsed)s) n) s
    JOIN bench_host h ON h.n = s.host_n
    JOIN (SELECT failure_type, strategies, row_number() OVER (ORDER BY failure_type) - 1 AS f_n
          FROM bench_failure) f ON f.f_n = s.f_n
    ORDER BY s.at""",
    """INSERT INTO monitor_lifecycletransition (host_id, at, from_state, to_state, trigger)
    SELECT i.host_id, to_timestamp(i.opened + t.frac * i.recover_s),
        replace(t.from_state, '{}', coalesce(c.state, '')),
        replace(t.to_state, '{}', coalesce(c.state, '')),
        replace(replace(t.trigger, '{}', coalesce(e.message, f.guard_detail)), '{model}',
                h.model_name)
    FROM bench_incident i
    JOIN bench_failure f USING (failure_type)
    JOIN bench_host h ON h.id = i.host_id
    JOIN bench_transition t ON t.kind = f.kind
    LEFT JOIN bench_crash c ON c.failure_type = i.failure_type
    LEFT JOIN bench_category bc ON bc.category = f.category
    LEFT JOIN bench_error e ON e.category = f.category AND e.cat_n = i.id %% bc.n
    WHERE i.failed OR f.kind <> 'crash'
    ORDER BY i.opened + t.frac * i.recover_s""",
    """INSERT INTO monitor_gpuevent (host_id, at, gpu_index, kind, severity, xid, message, action)
    SELECT i.host_id, to_timestamp(i.opened + 10), (i.id %% 8)::int,
        CASE WHEN i.failure_type = 'gpu_hardware' THEN 'xid' ELSE 'thermal' END,
        CASE WHEN i.failure_type = 'gpu_hardware' THEN 'critical' ELSE 'warning' END,
        CASE WHEN i.failure_type = 'gpu_hardware' THEN 79 END,
        CASE WHEN i.failure_type = 'gpu_hardware'
             THEN 'NVRM: Xid (PCI:0000:' || lpad((i.id %% 99)::text, 2, '0')
                  || ':00): 79, GPU has fallen off the bus.'
             ELSE 'GPU clocks cut: HW slowdown (temperature 88 C)' END,
        CASE WHEN i.failure_type = 'gpu_hardware' THEN 'drain the host and reset the GPU'
             ELSE '' END
    FROM bench_incident i
    WHERE i.host_id IS NOT NULL AND i.failure_type IN ('gpu_hardware', 'thermal_throttling')
    ORDER BY i.opened""",
    # The errors a host logged during its incidents, and others between them.
    """INSERT INTO monitor_vllmerror (host_id, category, message, signature, count,
        first_seen_at, last_seen_at, traceback, fields)
    SELECT i.host_id, e.category, e.message, e.signature, 1 + floor(i.r2 * 40)::int,
        to_timestamp(i.opened - i.detect_s + j * 20),
        to_timestamp(i.opened - i.detect_s + j * 20 + floor(i.r2 * 40) * 5),
        e.traceback, e.fields
    FROM bench_incident i
    CROSS JOIN LATERAL generate_series(1, 1 + (i.id %% 2)::int) j
    JOIN bench_failure f USING (failure_type)
    JOIN bench_category bc ON bc.category = f.category
    JOIN bench_error e ON e.category = f.category AND e.cat_n = (i.id + j) %% bc.n
    WHERE i.host_id IS NOT NULL AND i.failed
    ORDER BY i.opened""",
    """INSERT INTO monitor_vllmerror (host_id, category, message, signature, count,
        first_seen_at, last_seen_at, traceback, fields)
    SELECT h.id, e.category, e.message, e.signature, s.count, to_timestamp(s.at),
        to_timestamp(s.at + s.count * 5), e.traceback, e.fields
    FROM (SELECT n, %(end)s - random() * %(span)s AS at, floor(random() * %(hosts)s)::int
                 AS host_n, 1 + floor(random() * 20)::int AS count, random() AS r
          FROM generate_series(1, %(background)s) n) s
    JOIN bench_host h ON h.n = s.host_n
    JOIN (SELECT e.*, row_number() OVER (ORDER BY e.n) - 1 AS b_n,
                 count(*) OVER () AS b_count
          FROM bench_error e WHERE e.category = ANY(%(background_categories)s)) e
      ON e.b_n = floor(s.r * e.b_count)
    ORDER BY s.at""",
)


def _transition_table(conn: Any) -> None:
    conn.execute(
        "CREATE TEMP TABLE bench_transition (kind text, step int, from_state text, "
        "to_state text, trigger text, frac float8)"
    )
    conn.execute("CREATE TEMP TABLE bench_crash (failure_type text, state text)")
    with conn.cursor() as cur:
        for kind, steps in TRANSITIONS.items():
            for n, (src, dst, trigger, frac) in enumerate(steps):
                cur.execute(
                    "INSERT INTO bench_transition VALUES (%s, %s, %s, %s, %s, %s)",
                    (kind, n, src, dst, trigger, frac),
                )
        cur.executemany("INSERT INTO bench_crash VALUES (%s, %s)", list(CRASH_STATE.items()))


# ---------------------------------------------------------------- proposals, notes, audit


def _proposals(conn: Any) -> None:
    conn.execute(_PROPOSAL_STAGE, {})
    conn.execute(
        _PROPOSAL_INSERT,
        {"fmt": proposal_format(), "vetoes": list(VETO_REASONS), "errors": list(FAILED_ERRORS)},
    )


_PROPOSAL_STAGE = """
CREATE TEMP TABLE bench_proposal AS
SELECT row_number() OVER (ORDER BY i.opened + j * 60, i.id, j) AS id, i.id AS incident_id,
    i.host_id, h.name AS host, j, i.n_prop,
    i.opened + (j - 1) * least(600, i.recover_s / (i.n_prop + 1)) + 5 AS created,
    f.strategies[1 + (j - 1 + i.id::int) %% cardinality(f.strategies)] AS strategy,
    f.risks[1 + (j - 1 + i.id::int) %% cardinality(f.strategies)] AS risk,
    f.strategies[1 + (j + i.id::int) %% cardinality(f.strategies)] AS alternative,
    CASE
        WHEN j = i.n_prop AND i.state = 'resolved' AND i.healed_by IN ('automatic', 'approval')
            THEN 'done'
        WHEN j = i.n_prop AND i.state <> 'resolved'
            THEN (ARRAY['pending', 'pending', 'approved', 'executing', 'verifying'])
                 [1 + floor(random() * 5)::int]
        ELSE (ARRAY['done', 'done', 'done', 'done', 'vetoed', 'vetoed', 'lapsed', 'lapsed',
                    'expired', 'escalated', 'failed', 'failed'])[1 + floor(random() * 12)::int]
    END AS status,
    j = i.n_prop AND i.healed_by = 'automatic' AS auto, random() AS r, i.id %% 5 AS user_n
FROM bench_incident i
CROSS JOIN LATERAL generate_series(1, i.n_prop) j
JOIN bench_host h ON h.id = i.host_id
JOIN bench_failure f USING (failure_type)"""
_PROPOSAL_INSERT = (
    """
INSERT INTO healing_proposal (id, incident_id, host_id, trigger, strategy, params, plan, risk,
    confidence, alternatives, evidence, context_key, gate, status, auto, would_auto, on_expiry,
    created_at, deadline_at, decided_at, decided_by_id, decision_reason, chosen_strategy,
    idempotency_key, steps_done, started_at, executed_at, verify_until, outcome,
    metrics_before, metrics_after, error)
SELECT p.id, p.incident_id, p.host_id, 'prediction:' || p.incident_id, p.strategy,
    '{"max_num_seqs": 682, "max_num_batched_tokens": 5461}'::jsonb, d->'plan', p.risk,
    round((0.3 + 0.65 * p.r)::numeric, 4), d->'alternatives', d->'evidence',
    i.failure_type || '|serving|busy', d->'gate', p.status, p.auto, p.auto, 'escalated',
    to_timestamp(p.created), to_timestamp(p.created + 600),
    CASE WHEN p.status NOT IN ('pending', 'lapsed', 'expired', 'escalated')
         THEN to_timestamp(p.created + 10 + 290 * p.r) END,
    CASE WHEN p.status NOT IN ('pending', 'lapsed', 'expired', 'escalated') AND NOT p.auto
         THEN u.id END,
    CASE WHEN p.status = 'vetoed'
         THEN (%(vetoes)s::text[])[1 + (p.id %% cardinality(%(vetoes)s::text[]))] ELSE '' END,
    CASE WHEN p.status IN ('approved', 'executing', 'verifying', 'done', 'failed')
         THEN CASE WHEN p.r < 0.2 THEN p.alternative ELSE p.strategy END ELSE '' END,
    gen_random_uuid(),
    CASE WHEN p.status IN ('verifying', 'done', 'failed') THEN d->'steps_done'
         ELSE '[]'::jsonb END,
    CASE WHEN p.status IN ('executing', 'verifying', 'done', 'failed')
         THEN to_timestamp(p.created + 12 + 290 * p.r) END,
    CASE WHEN p.status IN ('verifying', 'done', 'failed')
         THEN to_timestamp(p.created + 80 + 290 * p.r) END,
    CASE WHEN p.status IN ('verifying', 'done')
         THEN to_timestamp(p.created + 380 + 290 * p.r) END,
    CASE WHEN p.status = 'failed' THEN 'failure'
         WHEN p.status <> 'done' THEN ''
         WHEN p.j = p.n_prop AND i.healed_by IN ('automatic', 'approval') THEN 'success'
         ELSE (ARRAY['success', 'no_effect', 'no_effect', 'failure', 'made_worse'])
              [1 + floor(p.r * 5)::int] END,
    d->'metrics_before',
    CASE WHEN p.status IN ('done', 'failed') THEN d->'metrics_after' ELSE '{}'::jsonb END,
    CASE WHEN p.status = 'failed'
         THEN replace((%(errors)s::text[])[1 + (p.id %% cardinality(%(errors)s::text[]))],
                      '{host}', p.host) ELSE '' END
FROM bench_proposal p
JOIN bench_incident i ON i.id = p.incident_id
JOIN bench_user u ON u.n = p.user_n
CROSS JOIN LATERAL (SELECT format(%(fmt)s, p.host, p.strategy, p.alternative,
    round((0.3 + 0.65 * p.r)::numeric, 4), round((0.2 + 0.5 * p.r)::numeric, 4),
    400 + (p.id %% 600), 4096 + (p.id %% 4096), floor(p.r * 900),
    """
    + ", ".join(
        f"round(({v!r} * (0.9 + 0.2 * random()))::numeric, {len(repr(v).split('.')[1])})"
        for v in list(METRICS.values()) * 2
    )
    + """)::jsonb AS d) j
ORDER BY p.id"""
)


def _notes_and_audit(conn: Any) -> None:
    conn.execute(_NOTES_SQL, {"notes": list(NOTES)})
    for sql in _AUDIT_SQL:
        conn.execute(sql)


_NOTES_SQL = """
INSERT INTO healing_incidentnote (incident_id, author_id, at, kind, text)
SELECT n.incident_id, n.author_id, n.at, n.kind, n.text FROM (
    SELECT i.id AS incident_id, u.id AS author_id,
        to_timestamp(i.opened + j * i.recover_s / (i.notes + 2)) AS at, 'note' AS kind,
        (%(notes)s::text[])[1 + ((i.id + j) %% cardinality(%(notes)s::text[]))] AS text
    FROM bench_incident i CROSS JOIN LATERAL generate_series(1, i.notes) j
    JOIN bench_user u ON u.n = (i.id + j) %% 5
    UNION ALL
    SELECT x.id, x.acknowledged_by_id, x.acknowledged_at, 'acknowledge',
        CASE WHEN x.id %% 3 = 0 THEN 'on it' ELSE 'acknowledged' END
    FROM healing_incident x WHERE x.acknowledged_by_id IS NOT NULL
    UNION ALL
    SELECT x.id, x.resolved_by_id, x.resolved_at, 'resolve', x.resolution
    FROM healing_incident x WHERE x.resolved_by_id IS NOT NULL
) n ORDER BY n.at"""
_AUDIT_SQL = (
    """INSERT INTO healing_auditentry (at, actor, action, target, reason, detail)
    SELECT p.decided_at, coalesce(u.username, 'sentinel'),
        CASE WHEN p.auto THEN 'proposal.auto_approve' WHEN p.status = 'vetoed' THEN 'proposal.veto'
             WHEN p.chosen_strategy <> p.strategy THEN 'proposal.alternative'
             ELSE 'proposal.approve' END,
        'proposal ' || p.id || ' on ' || h.name, p.decision_reason,
        jsonb_build_object('params', p.params, 'proposed', p.strategy,
                           'strategy', coalesce(nullif(p.chosen_strategy, ''), p.strategy))
    FROM healing_proposal p JOIN monitor_host h ON h.id = p.host_id
    LEFT JOIN auth_user u ON u.id = p.decided_by_id
    WHERE p.decided_at IS NOT NULL
    UNION ALL
    SELECT coalesce(p.verify_until, p.executed_at, p.created_at), 'sentinel', 'proposal.verify',
        'proposal ' || p.id || ' on ' || h.name,
        p.outcome, jsonb_build_object('outcome', p.outcome)
    FROM healing_proposal p JOIN monitor_host h ON h.id = p.host_id WHERE p.outcome <> ''
    ORDER BY 1""",
    """INSERT INTO healing_auditentry (at, actor, action, target, reason, detail)
    SELECT x.at, x.actor, x.action, x.target, x.reason, '{}'::jsonb FROM (
        SELECT i.resolved_at AS at, coalesce(u.username, 'sentinel') AS actor,
            'incident.resolve' AS action, i.title AS target,
            coalesce(nullif(i.resolution, ''), 'no signal for the quiet time and the host serves')
                AS reason
        FROM healing_incident i LEFT JOIN auth_user u ON u.id = i.resolved_by_id
        WHERE i.resolved_at IS NOT NULL
        UNION ALL
        SELECT n.at, u.username, 'incident.' || n.kind, i.title, left(n.text, 200)
        FROM healing_incidentnote n JOIN healing_incident i ON i.id = n.incident_id
        JOIN auth_user u ON u.id = n.author_id WHERE n.kind IN ('note', 'acknowledge')
        UNION ALL
        SELECT i.opened_at, 'sentinel', 'incident.group', 'incident ' || i.id,
            i.failure_type || ' on several hosts of ' || i.model_name
        FROM healing_incident i WHERE i.host_id IS NULL
    ) x ORDER BY x.at""",
)


def _search(conn: Any, end: int) -> None:
    """Fill each incident's search text as healing.incidents.reindex builds it."""
    conn.execute("ANALYZE")
    conn.execute(
        """UPDATE healing_incident i SET search = to_tsvector('simple', left(concat_ws(E'\\n',
            i.title, i.failure_type, i.resolution, i.model_name,
            (SELECT string_agg(s->>'detail', E'\\n') FROM jsonb_array_elements(i.signals) s),
            (SELECT string_agg(n.text, E'\\n') FROM healing_incidentnote n
             WHERE n.incident_id = i.id),
            (SELECT string_agg(concat_ws(E'\\n', p.error, p.decision_reason), E'\\n')
             FROM healing_proposal p WHERE p.incident_id = i.id),
            (SELECT string_agg(e.message, E'\\n') FROM (SELECT e.message FROM monitor_vllmerror e
             WHERE e.host_id = i.host_id AND e.last_seen_at >= i.opened_at - interval '15 min'
               AND e.first_seen_at <= coalesce(i.resolved_at, to_timestamp(%(end)s))
             LIMIT 50) e),
            (SELECT string_agg(m.title, E'\\n') FROM healing_incident m WHERE m.parent_id = i.id)
        ), 100000))""",
        {"end": end},
    )


def _finish(conn: Any) -> None:
    for table in ("healing_incident", "monitor_prediction", "healing_proposal"):
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" (SELECT coalesce(max(id), 1) FROM {table}))"
        )
    conn.execute("VACUUM ANALYZE")
