"""Read Prometheus text exposition into samples indexed by their wire name.

Samples are looked up by the name they carry on the wire (`vllm:prompt_tokens_total`,
`vllm:time_to_first_token_seconds_bucket`), never by family name: the parser strips `_total`
from counter families but not from histograms such as `vllm:iteration_tokens_total`, and older
`prometheus_client` versions wrote counter TYPE lines without `_total`. Sample names mean the
same thing in every version.

Cost: parsing is most of the agent's CPU. Two things keep it small:
1. Lines of families the reader never looks at (python_gc_*, `_created`, HTTP summaries,
   token-length histograms, anything unknown) are dropped before parsing.
2. The name-and-labels part of a line (`name{labels}`) is the same from scrape to scrape; only
   the value changes. Each distinct part is parsed once by `prometheus_client` and remembered,
   so a scrape costs a dict lookup and a float() per line.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = dict[str, str]
Samples = dict[str, list[tuple[Labels, float]]]

MAX_REMEMBERED_SERIES = 4096


@dataclass(slots=True)
class Exposition:
    """The kept samples of one /metrics body, plus how many sample lines the body had."""

    samples: Samples
    sample_lines: int

    def get(self, name: str) -> list[tuple[Labels, float]]:
        return self.samples.get(name, [])

    def has(self, name: str) -> bool:
        return name in self.samples


class ExpositionParser:
    """Parse /metrics bodies, keeping only the samples named in `wanted`."""

    def __init__(self, wanted: Collection[str]) -> None:
        self._wanted = frozenset(wanted)
        self._series: dict[str, tuple[str, Labels]] = {}

    def parse(self, text: str) -> Exposition:
        """Return the wanted samples of `text`; raise ValueError on a malformed wanted line."""
        samples: Samples = {}
        sample_lines = 0
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] == "#":
                continue
            sample_lines += 1
            if _metric_name(line) in self._wanted:
                name, labels, value = self._parse_line(line)
                samples.setdefault(name, []).append((labels, value))
        if len(self._series) > MAX_REMEMBERED_SERIES:
            self._series.clear()  # label churn (LoRA adapters, handlers): start afresh
        return Exposition(samples=samples, sample_lines=sample_lines)

    def _parse_line(self, line: str) -> tuple[str, Labels, float]:
        series, value = _split_value(line)
        known = self._series.get(series)
        if known is None:
            known = _parse_series(series)
            self._series[series] = known
        return known[0], known[1], value


def _metric_name(line: str) -> str:
    brace = line.find("{")
    if brace != -1:
        return line[:brace]
    return line.split(None, 1)[0]  # callers pass stripped, non-empty lines


def _split_value(line: str) -> tuple[str, float]:
    # The value (and an optional timestamp) follow the closing brace, or the name when there
    # are no labels; label values may hold spaces but never after the last brace.
    close = line.rfind("}")
    start = close + 1 if close != -1 else len(_metric_name(line))
    fields = line[start:].split()
    if not fields or len(fields) > 2:
        raise ValueError(f"malformed sample line: {line[:200]!r}")
    return line[:start], float(fields[0])


def _parse_series(series: str) -> tuple[str, Labels]:
    families = list(text_string_to_metric_families(series + " 0\n"))
    if len(families) != 1 or len(families[0].samples) != 1:
        raise ValueError(f"malformed sample line: {series[:200]!r}")
    sample = families[0].samples[0]
    return sample.name, dict(sample.labels)
