"""Measure what reading a fleet's history for training costs: whole, or a piece at a time.

1. Simulate `--hosts` hosts (memory leak, healthy, thermal and KV-cache scenarios, in turn)
   for `--hours` each and keep their checkpoints as JSON, as the database holds them.
2. Whole: decode every host's history and build every 10 s window with its features (what
   the learner did before it read in pieces).
3. In pieces (monitor/training.py): each host `--piece-h` hours at a time, with the window
   before and the horizon after each piece, the windows no failure followed thinned to
   about 20,000 over the fleet (learning.history.labelled_rows).

Prints, for each, the rows, wall seconds and peak Python memory (tracemalloc). The whole
history's peak grows with the hours; the pieces' stays that of one piece.

    .venv/bin/python bench/fleet_training.py [--hosts 8] [--hours 2] [--piece-h 1]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCENARIOS = ("memory_leak_oom", "healthy", "thermal_throttling", "kv_cache_exhaustion")
QUIET_WINDOWS = 20_000  # monitor.training.MAX_QUIET_WINDOWS


def main() -> None:
    import msgspec
    import numpy as np

    from learning import history
    from learning.features import features
    from learning.prediction import DEFAULT_HORIZON_S
    from simulator.history import simulate_many

    args = _parse()
    seeds = list(range(11, 11 + (args.hosts + len(SCENARIOS) - 1) // len(SCENARIOS)))
    runs = simulate_many(list(SCENARIOS), seeds, args.hours * 3600.0, workers=2)[: args.hosts]
    stored = [[msgspec.json.encode(cp) for cp in run.checkpoints] for run in runs]
    count = sum(map(len, stored))
    print(f"{len(stored)} hosts, {count} checkpoints ({count * 5 / 3600:.0f} host-hours)")

    def whole() -> int:
        decoded = [
            (f"fleet/{i}", [msgspec.json.decode(c) for c in s]) for i, s in enumerate(stored)
        ]
        windows, _, _ = history.training_set(decoded)
        np.vstack([features(w, float(w.t[-1])) for w in windows])
        return len(windows)

    def pieces() -> int:
        quiet_every_s = max(10.0, count * 5.0 / QUIET_WINDOWS)
        piece_s, rows = args.piece_h * 3600.0, 0
        for s in stored:
            times = [msgspec.json.decode(c)["collected_at"] for c in s]
            for since in np.arange(times[0], times[-1] + 1e-3, piece_s).tolist():
                first, until = since - history.PIECE_BEFORE_S, since + piece_s
                piece = [msgspec.json.decode(c) for c, t in zip(s, times, strict=True)
                         if first <= t < until + DEFAULT_HORIZON_S]  # fmt: skip
                rows += len(history.labelled_rows(piece, since=since, until=until,
                                                  quiet_every_s=quiet_every_s)[1])  # fmt: skip
        return rows

    for name, read in (("whole", whole), ("in pieces", pieces)):
        gc.collect()
        tracemalloc.start()
        started = time.perf_counter()
        rows = read()
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name:<10} {rows:>7} rows  {elapsed:6.1f} s  peak {peak / 2**20:6.0f} MB")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=8)
    p.add_argument("--hours", type=float, default=2.0, help="simulated hours per host")
    p.add_argument("--piece-h", type=float, default=1.0, help="hours read at a time")
    return p.parse_args()


if __name__ == "__main__":
    main()
