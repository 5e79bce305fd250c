"""Compare what an analysis costs at another commit and in this tree, on the same runs.

This machine's speed drifts by two to three times within an hour, so two runs of
bench/analysis_speed.py minutes apart cannot tell a 20 % change. This replays the same
checkpoints through both trees in alternating processes and prints each round's CPU
milliseconds per checkpoint and the ratio of the medians.

1. Check REV out into a temporary git worktree.
2. Simulate the training history (seeds 0..--seeds-1 of every scenario) and the replayed runs
   (the evaluation seed), once, with this tree's simulator.
3. In each tree, train its own pattern model and state graph on that history (a model is
   saved in the format of the code that trained it).
4. --rounds times, alternately: replay every run through one HostAnalyzer per host in a fresh
   process of each tree, with and without the model and graph.

    .venv/bin/python bench/analysis_ab.py REV [--seeds 3] [--rounds 4]
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run inside each tree: `python -c CHILD TREE DATA train|replay MODEL`, with that tree's own
# bench/analysis_speed.py (graph_of, replay_ms) and learning code.
CHILD = """
import pickle, statistics, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/bench"]
from analysis_speed import graph_of, replay_ms
data, step, saved = sys.argv[2:5]
if step == "train":
    from learning import patterns
    from learning.history import training_set
    history = pickle.load(open(data + "/history.pkl", "rb"))
    windows, labels, groups = training_set([(r.group, r.checkpoints) for r in history])
    model = patterns.train(windows, labels, groups=groups, provenance="bench")
    pickle.dump((model, graph_of(history)), open(saved, "wb"))
else:
    runs = pickle.load(open(data + "/replayed.pkl", "rb"))
    model, graph = pickle.load(open(saved, "rb"))
    replay_ms(runs, model, graph)  # compiled code and caches warm, as in a running worker
    for m, g in ((model, graph), (None, None)):
        print(statistics.fmean(replay_ms(runs, m, g).values()))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the commit to compare with, e.g. HEAD~3")
    parser.add_argument("--seeds", type=int, default=3, help="history seeds to train on")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from simulator.history import FAILURE_SCENARIOS, HEALTHY_SCENARIOS, simulate_many

    with tempfile.TemporaryDirectory() as data:
        other = f"{data}/tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", other,
                        args.rev], check=True)  # fmt: skip
        try:
            seeds = list(range(args.seeds))
            history = simulate_many(list(FAILURE_SCENARIOS), seeds, 1200.0, workers=2)
            history += simulate_many(list(HEALTHY_SCENARIOS), seeds, 2400.0, workers=2)
            scenarios = [*FAILURE_SCENARIOS, *HEALTHY_SCENARIOS]
            replayed = simulate_many(scenarios, [1000], 1200.0, workers=2)
            Path(data, "history.pkl").write_bytes(pickle.dumps(history))
            Path(data, "replayed.pkl").write_bytes(pickle.dumps(replayed))
            trees = {args.rev: other, "this tree": str(ROOT)}
            for i, tree in enumerate(trees.values()):
                _child(tree, data, "train", f"{data}/model{i}.pkl")
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for r in range(args.rounds):
                for i, (name, tree) in enumerate(trees.items()):
                    out = _child(tree, data, "replay", f"{data}/model{i}.pkl")
                    with_model, without = map(float, out.split())
                    figures[name].append((with_model, without))
                    print(f"round {r + 1}  {name:<12} {with_model:.2f} ms with the model and "
                          f"graph, {without:.2f} ms without")  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", other],
                           check=False)  # fmt: skip
    (old, new) = figures.values()
    for k, label in enumerate(("with the model and graph", "without")):
        a, b = statistics.median(f[k] for f in old), statistics.median(f[k] for f in new)
        print(f"median ms per checkpoint {label}: {args.rev} {a:.2f}, this tree {b:.2f} "
              f"(ratio {b / a:.2f})")  # fmt: skip


def _child(tree: str, data: str, step: str, model: str) -> str:
    done = subprocess.run([sys.executable, "-c", CHILD, tree, data, step, model],
                          check=True, capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip()


if __name__ == "__main__":
    main()
