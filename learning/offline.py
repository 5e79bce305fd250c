"""Analyse checkpoints from a file, outside the control plane: the analysis the worker runs.

    python -m learning.offline checkpoints.json [--model pattern-model.bin] [--now TIME]
    python -m learning.offline checkpoints.jsonl --replay

The file holds checkpoints in the documented JSON format (agent/checkpoint.py): a JSON array,
one checkpoint, or one checkpoint per line (what `curl -s .../v1/checkpoint >> file` in a loop
collects); "-" reads standard input. Each host (a checkpoint's `host`) is analysed apart.

By default it prints, per host, the predictions and forecasts as of `--now` (the host's
newest checkpoint). With `--replay` it feeds the checkpoints one at a time, as the worker
does, and prints when each prediction would have opened and closed (learning.hysteresis)
and when the lifecycle state changed: whether Sentinel would have warned before a failure
in a trace of your own. The pattern model takes part only when `--model` names one; the
worker always has one (on simulator history until the fleet has its own), so without it a
replay can warn later than the product would.

Entries that are not checkpoints (not JSON, not an object, no usable `collected_at`) are left
out and counted. A file that cannot be read, holds no checkpoint, or a model that cannot be
loaded is an error that says why (exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from learning import hysteresis
from learning.predict import HostAnalyzer
from learning.window import collected_at, epoch_seconds


class InputError(Exception):
    """The input cannot be analysed at all; the message says why."""


def read_checkpoints(text: str) -> tuple[dict[str, list[dict[str, Any]]], Counter[str]]:
    """Return the checkpoints in `text` by host, oldest first, and what was left out, by reason."""
    left_out: Counter[str] = Counter()
    by_host: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in _items(text, left_out):
        if not isinstance(item, dict):
            left_out["not an object"] += 1
        elif math.isnan(collected_at(item)):
            left_out["no usable collected_at"] += 1
        else:
            by_host[str(item.get("host") or "unnamed")].append(item)
    if not by_host:
        reasons = ", ".join(f"{n} {why}" for why, n in left_out.items()) or "the input is empty"
        raise InputError(f"no checkpoint to analyse ({reasons})")
    return {h: sorted(cps, key=collected_at) for h, cps in sorted(by_host.items())}, left_out


def _items(text: str, left_out: Counter[str]) -> Iterator[Any]:
    try:
        whole = json.loads(text)
    except ValueError:  # not one document: one per line
        pass
    else:
        yield from whole if isinstance(whole, list) else [whole]
        return
    for line in text.splitlines():  # one JSON document per line
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError:
                left_out["not JSON"] += 1


def analyse(
    by_host: dict[str, list[dict[str, Any]]], now: float | None, model: Any
) -> dict[str, Any]:
    """Return each host's predictions and forecasts as of `now` (default: its newest)."""
    hosts = {}
    for host, checkpoints in by_host.items():
        at = now if now is not None else collected_at(checkpoints[-1])
        analyzer = HostAnalyzer(window_s=math.inf)  # all of them, as predict.analyze reads a window
        for checkpoint in checkpoints:  # read_checkpoints left them usable and in time order
            analyzer.add(checkpoint)
        result = analyzer.analyze(at, model=model)
        hosts[host] = {
            "now": at,
            "checkpoints": len(checkpoints),
            "predictions": [dataclasses.asdict(p) for p in result.predictions],
            "forecasts": [dataclasses.asdict(f) for f in result.forecasts],
        }
    return hosts


def replay(checkpoints: Sequence[dict[str, Any]], model: Any) -> Iterator[dict[str, Any]]:
    """Yield, in time order, each prediction's opening and closing as the worker would have
    decided them, feeding the host's checkpoints one at a time, and the host's lifecycle
    state whenever it changes (so a failure shows beside the warnings before it)."""
    analyzer, open_since, state = HostAnalyzer(), dict[str, float](), None
    for checkpoint in checkpoints:
        if not analyzer.add(checkpoint):
            continue
        now = collected_at(checkpoint)
        if checkpoint.get("lifecycle_state") != state:
            state = checkpoint.get("lifecycle_state")
            yield _event(now, "state", state=state)
        decision = hysteresis.decide(
            open_since, analyzer.analyze(now, model=model).predictions, now
        )
        for prediction in decision.opened:
            open_since[prediction.failure_type] = now
            yield _event(now, "opened", **dataclasses.asdict(prediction))
        for failure_type in decision.closed:
            del open_since[failure_type]
            yield _event(now, "closed", failure_type=failure_type)


def _event(now: float, event: str, **fields: Any) -> dict[str, Any]:
    time = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    return {"at": now, "time": time, "event": event, **fields}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        by_host, left_out = read_checkpoints(text)
        model = _model(args.model)
    except UnicodeDecodeError:
        print(f"learning.offline: {args.file}: not text (UTF-8): no checkpoints", file=sys.stderr)
        return 2
    except (OSError, InputError) as exc:
        print(f"learning.offline: {exc}", file=sys.stderr)
        return 2
    if args.replay:
        for host, checkpoints in by_host.items():
            for event in replay(checkpoints, model):
                print(_json({"host": host, **event}))
    else:
        out = {"hosts": analyse(by_host, args.now, model), "left_out": dict(left_out)}
        print(_json(out, indent=1))
    if left_out:
        print(f"left out: {dict(left_out)}", file=sys.stderr)
    return 0


def _json(value: Any, indent: int | None = None) -> str:
    """Return `value` as strict JSON: a figure that is not a finite number becomes null."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _model(path: str | None) -> Any:
    if path is None:
        return None
    from learning import patterns

    try:
        return patterns.loads(Path(path).read_bytes())
    except patterns.ModelError as exc:
        raise InputError(f"{path}: {exc}") from None


def _time(text: str) -> float:
    t = epoch_seconds(text)
    if math.isnan(t):
        raise argparse.ArgumentTypeError(f"not a time (epoch seconds or ISO 8601): {text!r}")
    return t


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m learning.offline", description=__doc__.split("\n")[0]
    )
    p.add_argument("file", help="checkpoints: a JSON array or one per line; - for stdin")
    p.add_argument(
        "--model",
        help="a saved pattern model (`evaluate/run --save-model FILE` saves the cold-start one); "
        "without it, the detectors, forecasts and anomaly detectors only",
    )
    p.add_argument(
        "--now",
        type=_time,
        help="analyse as of this time (epoch s, or ISO 8601: 2026-06-15T06:05Z)",
    )
    p.add_argument("--replay", action="store_true", help="print when predictions open and close")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
