"""Score `learning.anomaly` on labelled streams the way the Numenta Anomaly Benchmark does.

Input: a directory of NAB-format CSVs (`<category>/<name>.csv`, columns timestamp,value[,...])
and a windows JSON (`{"<category>/<name>.csv": [[start, end], ...]}`, NAB's
labels/combined_windows.json). NAB's data is not ours to ship: point this at a copy.

1. Run a fresh detector over each stream, one sample at a time, oldest first.
2. Ignore the probationary period (the first 15 % of a stream, at most 750 rows), as NAB does.
3. Standard profile: a detection inside a window scores the scaled sigmoid of how early it
   came (only the window's first detection counts); a detection outside windows costs 0.11
   times the scaled sigmoid of its distance from the window before it (full cost when none);
   a window without a detection costs 1. Raw totals are normalised to 100 * (raw - null) /
   (perfect - null), null = never detecting, perfect = detecting at each window's start.
4. Also report, at the threshold, precision (alarm rows inside windows / alarm rows), recall
   (windows detected / windows) and false-positive alarm events.

    .venv/bin/python bench/anomaly_eval.py --data /tmp/nab/data --windows /tmp/nab/windows.json \
        [--categories realAWSCloudwatch,realKnownCause] [--sweep]
    .venv/bin/python bench/anomaly_eval.py --make-synthetic /tmp/nab-synthetic
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learning.anomaly import ALARM_THRESHOLD, StreamDetector

TP_WEIGHT, FP_WEIGHT, FN_WEIGHT = 1.0, 0.11, 1.0  # NAB's standard profile
PROBATION_PERCENT = 0.15
SWEEP = (0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class Stream:
    name: str
    times: list[datetime]
    values: list[float]
    windows: list[tuple[int, int]]  # row index ranges, inclusive
    scores: list[float] = field(default_factory=list)


def scaled_sigmoid(position: float) -> float:
    """NAB's weight: ~1 at a window's start, 0 at its end, towards -1 well after it."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def read_streams(data: Path, windows_json: Path, categories: set[str] | None) -> list[Stream]:
    labels: dict[str, list[list[str]]] = json.loads(windows_json.read_text())
    streams = []
    for path in sorted(data.glob("*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        if name not in labels or (categories and path.parent.name not in categories):
            continue
        times, values = _read_csv(path)
        spans = [(_parse(a), _parse(b)) for a, b in labels[name]]
        rows = [_rows_within(times, a, b) for a, b in spans]
        streams.append(Stream(name, times, values, [r for r in rows if r is not None]))
    return streams


def _read_csv(path: Path) -> tuple[list[datetime], list[float]]:
    with path.open() as f:
        rows = list(csv.reader(f))[1:]
    return [_parse(r[0]) for r in rows], [float(r[1]) for r in rows]


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def _rows_within(times: list[datetime], start: datetime, end: datetime) -> tuple[int, int] | None:
    inside = [i for i, t in enumerate(times) if start <= t <= end]
    return (inside[0], inside[-1]) if inside else None


def run(stream: Stream, threshold: float = ALARM_THRESHOLD) -> None:
    # The detector holds an episode's later samples under its threshold: each is run afresh.
    detector = StreamDetector(threshold)
    stream.scores = [detector.score(t, v) for t, v in zip(stream.times, stream.values, strict=True)]


@dataclass
class Tally:
    raw: float = 0.0
    null: float = 0.0
    perfect: float = 0.0
    alarms: int = 0
    alarms_in_windows: int = 0
    windows: int = 0
    detected: int = 0
    fp_events: int = 0

    def add(self, other: Tally) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def normalised(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null) if self.windows else 0.0


def tally(stream: Stream, threshold: float) -> Tally:
    """Return the NAB standard-profile score of one scored stream at `threshold`."""
    n = len(stream.values)
    probation = min(math.floor(PROBATION_PERCENT * n), int(PROBATION_PERCENT * 5000))
    window_of = {i: w for w, (a, b) in enumerate(stream.windows) for i in range(a, b + 1)}
    best: dict[int, float] = {}
    out = Tally(windows=len(stream.windows))
    out.null = -FN_WEIGHT * len(stream.windows)
    out.perfect = TP_WEIGHT * scaled_sigmoid(-1.0) * len(stream.windows)
    previous_alarm_fp = False
    for i in range(probation, n):
        alarm = stream.scores[i] >= threshold
        out.alarms += alarm
        if not alarm:
            previous_alarm_fp = False
            continue
        if i in window_of:
            w = window_of[i]
            a, b = stream.windows[w]
            weight = TP_WEIGHT * scaled_sigmoid(-(b - i + 1) / (b - a + 1))
            best[w] = max(best.get(w, -1.0), weight)
            out.alarms_in_windows += 1
            previous_alarm_fp = False
        else:
            out.raw += FP_WEIGHT * _fp_weight(stream.windows, i)
            out.fp_events += not previous_alarm_fp
            previous_alarm_fp = True
    out.detected = len(best)
    out.raw += sum(best.values()) - FN_WEIGHT * (len(stream.windows) - len(best))
    return out


def _fp_weight(windows: list[tuple[int, int]], i: int) -> float:
    before = [(a, b) for a, b in windows if b < i]
    if not before:
        return -1.0
    a, b = before[-1]
    return scaled_sigmoid((i - b) / (b - a + 1))


def report(streams: list[Stream], threshold: float, verbose: bool) -> Tally:
    total = Tally()
    for stream in streams:
        one = tally(stream, threshold)
        total.add(one)
        if verbose:
            print(
                f"  {stream.name:58s} windows {one.detected}/{one.windows} "
                f"fp-events {one.fp_events:3d} alarm-rows {one.alarms:4d} raw {one.raw:+.2f}"
            )
    precision = total.alarms_in_windows / total.alarms if total.alarms else float("nan")
    recall = total.detected / total.windows if total.windows else float("nan")
    print(
        f"threshold {threshold:.2f}: NAB standard {total.normalised:6.1f}  "
        f"precision {precision:.2f}  recall {recall:.2f} ({total.detected}/{total.windows})  "
        f"fp-events {total.fp_events}  streams {len(streams)}"
    )
    return total


def make_synthetic(out: Path, seed: int = 7) -> None:
    """Write NAB-like artificial streams (5-min samples, 14 days) and their windows."""
    rng = random.Random(seed)
    start, step, n = datetime(2014, 4, 1), timedelta(minutes=5), 4032
    windows: dict[str, list[list[str]]] = {}

    def daily(i: int) -> float:
        return 50.0 + 30.0 * math.sin(2 * math.pi * i / 288)

    kinds = {
        "noise": (lambda i, a: rng.gauss(50, 5), None),
        "daily": (lambda i, a: daily(i) + rng.gauss(0, 2), None),
        "flat": (lambda i, a: 20.0, None),
        "steps": (lambda i, a: float(int(daily(i) / 10) * 10), None),
        "jumpsup": (lambda i, a: daily(i) * (1.6 if a else 1.0) + rng.gauss(0, 2), (2900, 2960)),
        "flatmiddle": (lambda i, a: (50.0 if a else daily(i)) + rng.gauss(0, 2), (2600, 2900)),
        "spike": (lambda i, a: 50 + rng.gauss(0, 3) + (40 if a else 0), (3000, 3001)),
        "levelshift": (lambda i, a: 50 + rng.gauss(0, 3) + (15 if a else 0), (3000, n)),
        "variance": (lambda i, a: 50 + rng.gauss(0, 12 if a else 2), (3100, 3300)),
        "stuck": (lambda i, a: 50.0 + (0 if a else rng.gauss(0, 3)), (3200, 3300)),
    }
    for kind, (gen, anomaly) in kinds.items():
        category = "synthNoAnomaly" if anomaly is None else "synthWithAnomaly"
        path = out / category / f"synth_{kind}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["timestamp,value"]
        for i in range(n):
            inside = anomaly is not None and anomaly[0] <= i < anomaly[1]
            lines.append(f"{start + i * step},{gen(i, inside):.4f}")
        path.write_text("\n".join(lines) + "\n")
        width = n // 10  # NAB: windows span 10 % of the stream, centred on the anomaly
        windows[f"{category}/{path.name}"] = (
            []
            if anomaly is None
            else [
                [
                    str(start + (anomaly[0] - width // 2) * step),
                    str(start + (anomaly[0] + width // 2) * step),
                ]
            ]
        )
    (out / "windows.json").write_text(json.dumps(windows, indent=1))
    print(f"wrote {len(kinds)} streams and windows.json under {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--windows", type=Path)
    parser.add_argument("--categories", default="", help="comma-separated; default all")
    parser.add_argument("--threshold", type=float, default=ALARM_THRESHOLD)
    parser.add_argument("--sweep", action="store_true", help="also try other thresholds")
    parser.add_argument("--quiet", action="store_true", help="no per-stream lines")
    parser.add_argument("--make-synthetic", type=Path, help="write synthetic streams here")
    args = parser.parse_args()
    if args.make_synthetic:
        make_synthetic(args.make_synthetic)
        return
    if not args.data or not args.windows:
        parser.error("--data and --windows are required")
    categories = set(filter(None, args.categories.split(",")))
    streams = read_streams(args.data, args.windows, categories or None)
    for threshold in [args.threshold, *(SWEEP if args.sweep else ())]:
        for stream in streams:
            run(stream, threshold)
        report(streams, threshold, verbose=not args.quiet and threshold == args.threshold)


if __name__ == "__main__":
    main()
