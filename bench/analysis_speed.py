"""Measure what one analysis worker costs: a new checkpoint analysed, and a model trained.

1. Simulate every failure scenario and the healthy ones (seeds 0..--seeds-1, the real agent,
   a checkpoint every 5 s), as the cold start does.
2. Train the pattern model on the first --windows labelled windows of that history (features,
   held-out split, calibration folds, compilation): wall and CPU seconds. Target: under a
   minute for 10,000 windows.
3. Replay the evaluation seed of every scenario through one HostAnalyzer per host, as the
   analysis worker runs it (learning/predict.py: add the checkpoint, then analyze with the
   pattern model and the fleet's state graph), and report the CPU milliseconds per
   checkpoint: median of --rounds rounds, and per scenario. Target: 2 ms, so one worker keeps
   up with 500 checkpoints a second. Without the model and graph too, to show their share.
4. A host after its first hour of serving, whose analyzer scores every checkpoint against its
   own isolation forest and refits it every two hours (learning/predict.py, USUAL_*): the
   CPU milliseconds per checkpoint over one refit period, the fit included.

CPU time (time.process_time) of this process only, so other work on a shared machine counts
less than in wall time; the median of rounds absorbs the rest.

    .venv/bin/python bench/analysis_speed.py [--seeds 9] [--windows 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learning import patterns
from learning.history import training_set
from learning.predict import USUAL_FIRST_ROWS, USUAL_REFIT_ROWS, HostAnalyzer
from learning.state_graph import StateGraph
from simulator.history import FAILURE_SCENARIOS, HEALTHY_SCENARIOS, Run, simulate_many

EVAL_SEED = 1000
BUDGET_MS = 2.0
TRAIN_BUDGET_S = 60.0


def train(runs: list[Run], windows_wanted: int) -> Any:
    windows, labels, groups = training_set([(r.group, r.checkpoints) for r in runs])
    n = min(windows_wanted, len(windows))
    wall, cpu = time.perf_counter(), time.process_time()
    model = patterns.train(windows[:n], labels[:n], groups=groups[:n], provenance="bench")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    verdict = "ok" if wall < TRAIN_BUDGET_S else "OVER"
    print(f"training on {n} labelled windows: {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(budget {TRAIN_BUDGET_S:.0f} s: {verdict})")  # fmt: skip
    if n < windows_wanted:
        print(f"  (the history held only {n} windows; raise --seeds for {windows_wanted})")
    return model


def graph_of(runs: list[Run]) -> Any:
    graph = StateGraph()
    for run in runs:
        for cp in run.checkpoints:
            graph.extend(cp.get("transitions") or [], host=run.group)
    return graph.model(max(float(r.checkpoints[-1]["collected_at"]) for r in runs))


def replay_ms(runs: list[Run], model: Any, graph: Any) -> dict[str, float]:
    """Return CPU ms per checkpoint for each run: add + analyze, as the worker does."""
    per_run = {}
    for run in runs:
        analyzer = HostAnalyzer()
        began = time.process_time()
        for cp in run.checkpoints:
            analyzer.add(cp)
            analyzer.analyze(float(cp["collected_at"]), model=model, graph=graph)
        per_run[run.scenario] = (time.process_time() - began) / len(run.checkpoints) * 1000
    return per_run


def steady_ms(run: Run, model: Any, graph: Any) -> float:
    """Return CPU ms per checkpoint of `run` over one refit period of the host's forest,
    from its first fit on."""
    analyzer = HostAnalyzer()
    first, last = USUAL_FIRST_ROWS, USUAL_FIRST_ROWS + USUAL_REFIT_ROWS
    for cp in run.checkpoints[: first - 1]:
        analyzer.add(cp)
        analyzer.analyze(float(cp["collected_at"]), model=model, graph=graph)
    began = time.process_time()
    for cp in run.checkpoints[first - 1 : last]:
        analyzer.add(cp)
        analyzer.analyze(float(cp["collected_at"]), model=model, graph=graph)
    return (time.process_time() - began) / (last - first + 1) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=9, help="history seeds 0..N-1 to train on")
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--duration-s", type=float, default=1200.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="processes simulating runs")
    args = parser.parse_args()

    began = time.perf_counter()
    seeds = list(range(args.seeds))
    history = simulate_many(list(FAILURE_SCENARIOS), seeds, args.duration_s, workers=args.workers)
    history += simulate_many(
        list(HEALTHY_SCENARIOS), seeds, 2 * args.duration_s, workers=args.workers
    )
    scenarios = [*FAILURE_SCENARIOS, *HEALTHY_SCENARIOS]
    replayed = simulate_many(scenarios, [EVAL_SEED], args.duration_s, workers=args.workers)
    checkpoints = sum(len(r.checkpoints) for r in replayed)
    print(f"simulated {len(history)} runs to train on and {len(replayed)} to replay "
          f"({checkpoints} checkpoints) in {time.perf_counter() - began:.0f} s")  # fmt: skip

    model = train(history, args.windows)
    graph = graph_of(history)
    # Untimed: a fresh checkout compiles the analysis' kernels on its first use (numba caches
    # them on disk), which is not what a running worker pays per checkpoint.
    replay_ms(replayed[:1], model, graph)
    for label, m, g in (("with the pattern model and state graph", model, graph),
                        ("detectors, forecasts and anomalies only", None, None)):  # fmt: skip
        rounds = [replay_ms(replayed, m, g) for _ in range(args.rounds)]
        overall = [statistics.fmean(r.values()) for r in rounds]
        median = statistics.median(overall)
        verdict = "ok" if median <= BUDGET_MS else "OVER"
        print(f"analysis per checkpoint, {label}: {median:.2f} ms CPU median of "
              f"{args.rounds} rounds (budget {BUDGET_MS:g} ms: {verdict}; "
              f"{1000 / median:.0f} checkpoints/s per worker)")  # fmt: skip
        for scenario in scenarios:
            ms = statistics.median(r[scenario] for r in rounds)
            print(f"  {scenario:<24}{ms:6.2f} ms")
    long_s = 5 * (USUAL_FIRST_ROWS + USUAL_REFIT_ROWS + 60)  # a checkpoint every 5 s
    (steady,) = simulate_many(["healthy"], [EVAL_SEED], long_s, workers=1)
    ms = statistics.median(steady_ms(steady, model, graph) for _ in range(args.rounds))
    print(f"a healthy host after an hour of serving, its own isolation forest fitted and "
          f"refitted: {ms:.2f} ms CPU per checkpoint, the fit included "
          f"(budget {BUDGET_MS:g} ms: {'ok' if ms <= BUDGET_MS else 'OVER'})")  # fmt: skip


if __name__ == "__main__":
    main()
