"""Measure the CPU cost of the named detectors, the metric forecasts and the state graph.

1. Simulate one host of each of a few scenarios (speed 0, a checkpoint every 5 s), keep the
   last 120 checkpoints of each as a window, and time every detector and a forecast of each
   key series on every window; print the worst milliseconds per call (budget: 0.3 ms).
2. Simulate a small fleet, build its state graph, replicate the transitions to about
   `--transitions` rows, and time the fit, a risk, a risk conditioned on the dwell so far,
   the failure paths and the recovery of every state, and the export for drawing.

CPU time (time.process_time), best of three rounds, so other processes on the machine count less.

    .venv/bin/python bench/learning_speed.py [--transitions 20000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.checkpoint import to_dict
from learning import detectors
from learning.forecast import forecast, predict_linear, threshold_alarm
from learning.state_graph import StateGraph
from learning.window import Window, window
from simulator.fleet import FleetConfig, run_fleet

SCENARIOS = ["healthy", "kv_cache_exhaustion", "memory_leak_oom", "api_server_leak"]
DETECTORS = [
    "gpu_memory_leak",
    "host_memory_leak",
    "performance_degradation",
    "kv_cache_exhaustion",
    "queue_growth",
    "fd_exhaustion",
    "thermal",
]
FORECAST_METRICS = [
    "gpu_mem_used_pct",
    "gpu_mem_used_bytes",
    "kv_cache_usage_pct",
    "requests_waiting",
    "itl_p99_s",
    "ttft_p99_s",
]


async def simulate(
    scenarios: list[str], seconds: float
) -> tuple[list[list[dict[str, Any]]], float]:
    """Return each host's checkpoints (dicts, every 5 s) and the simulated time at the end."""
    config = FleetConfig(hosts=len(scenarios), seed=1, scenarios=scenarios, speed=0)
    async with run_fleet(config) as fleet:
        runs: list[list[dict[str, Any]]] = [[] for _ in fleet.hosts]
        seen = [0] * len(fleet.hosts)
        for _ in range(int(seconds / 5)):
            await fleet.advance(5)
            for i, host in enumerate(fleet.hosts):
                assert host.agent is not None
                cp = to_dict(await host.agent.collect(events_since=seen[i]))
                seen[i] = cp["event_seq"]
                runs[i].append(cp)
        return runs, fleet.epoch + fleet.t


def cpu_ms(call: Callable[[], object], repeat: int) -> float:
    """Return the best of three rounds of `repeat` calls, in CPU milliseconds per call."""
    call()
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        for _ in range(repeat):
            call()
        best = min(best, time.process_time() - began)
    return best / repeat * 1000


def report(label: str, ms: float) -> None:
    print(f"  {label:<46}{ms:8.3f}")


def fresh(w: Window, call: Callable[[Window], object]) -> Callable[[], object]:
    """Return `call` on `w` with the window's shared figures forgotten first: a window is
    analysed once, so a repeat must not find the trends its first call worked out."""

    def run() -> object:
        w.cache.clear()
        return call(w)

    return run


def bench_windows(windows: dict[str, Window], repeat: int) -> None:
    print(f"per call on 120-checkpoint windows, worst of {', '.join(windows)} (ms CPU):")
    for name in DETECTORS:
        detector = getattr(detectors, name)
        worst = max(
            cpu_ms(fresh(w, lambda w, d=detector: d(w, w.t[-1])), repeat) for w in windows.values()
        )
        report(f"detectors.{name}", worst)
    worst = max(
        cpu_ms(fresh(w, lambda w: detectors.detect(w, w.t[-1])), repeat) for w in windows.values()
    )
    report("detectors.detect (all seven)", worst)
    for metric in FORECAST_METRICS:
        worst = max(
            cpu_ms(fresh(w, lambda w, m=metric: forecast(w, m, w.t[-1])), repeat)
            for w in windows.values()
        )
        report(f"forecast({metric})", worst)
    w = next(iter(windows.values()))
    report("predict_linear", cpu_ms(lambda: predict_linear(w, "itl_p99_s", w.t[-1], 300), repeat))
    report("threshold_alarm", cpu_ms(lambda: threshold_alarm(w, "itl_p99_s", 0.2), repeat))


def replicate(graph: StateGraph, copies: int) -> StateGraph:
    """Return a graph holding `copies` renamed copies of every host's transitions."""
    rows = graph.rows()
    return StateGraph(
        (f"{r.host}-{c}", r.at, r.from_state, r.to_state) for c in range(copies) for r in rows
    )


def bench_graph(runs: list[list[dict[str, Any]]], now: float, size: int, repeat: int) -> None:
    seed = StateGraph()
    for run in runs:
        for cp in run:
            seed.extend(cp["transitions"], host=cp["host"])
    graph = replicate(seed, max(1, size // max(len(seed), 1)))
    model = graph.model(now)
    failed = [s for s in model.states if s.startswith("failed_")]
    print(
        f"state graph of {len(graph)} transitions, {len(graph.hosts())} hosts, "
        f"{len(model.states)} states (ms CPU):"
    )
    report("StateGraph.model(now) (the fit)", cpu_ms(lambda: graph.model(now), 3))
    report(
        "StateGraph.add (one transition)", cpu_ms(lambda: graph.add(("x", now, "a", "b")), repeat)
    )
    few = max(1, repeat // 10)
    report("risk(serving)", cpu_ms(lambda: model.risk("serving"), few))
    report(
        "risk(serving, elapsed_s=120)", cpu_ms(lambda: model.risk("serving", elapsed_s=120), few)
    )
    report("failure_paths(serving, k=3)", cpu_ms(lambda: model.failure_paths("serving"), few))
    report(
        "recovery(s) for every failed state",
        cpu_ms(lambda: [model.recovery(s) for s in failed], few),
    )
    report(
        "failure_paths(k=1) and recovery, every state",
        cpu_ms(
            lambda: [(model.failure_paths(s, k=1), model.recovery(s)) for s in model.states], few
        ),
    )
    report(
        "export(current_state=degraded, elapsed_s=30)",
        cpu_ms(lambda: model.export(current_state="degraded", elapsed_s=30.0), few),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    runs, _ = asyncio.run(simulate(SCENARIOS, 900))
    windows = {name: window(run[-120:]) for name, run in zip(SCENARIOS, runs, strict=True)}
    bench_windows(windows, args.repeat)
    fleet_scenarios = ["memory_leak_oom", "engine_death", "nccl_hang", "healthy"]
    fleet, now = asyncio.run(simulate(fleet_scenarios, 900))
    bench_graph(fleet, now, args.transitions, args.repeat)


if __name__ == "__main__":
    main()
