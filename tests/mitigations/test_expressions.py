"""The guardrail language: what it computes, and everything it refuses."""

from __future__ import annotations

import math

import pytest

from mitigations.expressions import ExpressionError, compile_condition, upper_limits

NAMES = frozenset({"kv", "waiting", "state", "temp"})


def run(text: str, **env: object) -> bool:
    functions = {"p": lambda t: {"cuda_oom": 0.7}.get(t, 0.0), "eta": lambda t: 120.0,
                 "gpu_events": lambda k: 0.0, "errors": lambda c: 2.0}  # fmt: skip
    return compile_condition(text, NAMES).evaluate({**env, "__functions__": functions})


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("kv > 95 and waiting > 10", {"kv": 97.0, "waiting": 11.0}, True),
        ("kv > 95 and waiting > 10", {"kv": 97.0, "waiting": 3.0}, False),
        ("kv > 95 or not waiting < 10", {"kv": 50.0, "waiting": 30.0}, True),
        ("80 < temp <= 90", {"temp": 85.0}, True),
        ("80 < temp <= 90", {"temp": 91.0}, False),
        ("state in ('failed_hang', 'failed_nccl')", {"state": "failed_nccl"}, True),
        ("state not in ('serving',)", {"state": "serving"}, False),
        ("kv * 2 - 10 / 2 >= 195", {"kv": 100.0}, True),
        ("-kv < 0", {"kv": 1.0}, True),
        ('p("cuda_oom") >= 0.6 and eta("cuda_oom") < 300', {}, True),
        ('p("hang") > 0', {}, False),
        ('errors("cuda_oom") == 2', {}, True),
        ("ratio(waiting, kv) > 1", {"waiting": 5.0, "kv": 0.0}, True),  # x/0 is inf
        ("max(kv, temp) > 90 and abs(-3) == 3", {"kv": 10.0, "temp": 95.0}, True),
        ("kv / 0 > 1", {"kv": 2.0}, True),
        ("kv > 10", {}, False),  # a missing figure is NaN: never true
        ("kv > 10", {"kv": math.nan}, False),
        ("kv < 10", {"kv": math.nan}, False),
        ("kv > 'text'", {"kv": 1.0}, False),  # a type error is false, not a crash
    ],
)
def test_it_computes(text: str, env: dict[str, object], expected: bool) -> None:
    assert run(text, **env) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("kv >", "not a condition"),
        ("wating > 3", "unknown name 'wating'.*did you mean waiting"),
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('true')", "only named functions"),
        ("().__class__.__bases__", "attribute access"),
        ("state.upper() == 'X'", "only named functions"),
        ("[x for x in (1, 2)]", "comprehension"),
        ("(lambda: 1)()", "only named functions"),
        ("kv[0] > 1", "indexing"),
        ("kv ** 99999999 > 1", r"\*\*"),
        ("kv if kv else 1", "if-else"),
        ("max(kv, key=kv) > 1", "keyword"),
        ("p(state) > 0", "one quoted name"),
        ("eval('1')", "unknown function 'eval'"),
        ("kv is None", "is not allowed"),
        ("(waiting := 3) > 1", ":="),
        ("b'x' == kv", "constant"),
        ("kv > 1 " + "and kv > 1 " * 300, "longer than|more than"),
    ],
)
def test_it_refuses(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        compile_condition(text, NAMES)


def test_it_records_the_names_it_reads() -> None:
    compiled = compile_condition('kv > 1 and p("cuda_oom") > 0', NAMES)
    assert compiled.names == {"kv", "p()"}


@pytest.mark.parametrize(
    ("text", "limits"),
    [
        ("kv > 95 and (waiting >= 10 or preemptions > 0)",
         [("kv", 95.0), ("waiting", 10.0), ("preemptions", 0.0)]),
        ("200 < waiting", [("waiting", 200.0)]),
        ("1 < kv <= 7", [("kv", 1.0)]),  # kv <= 7 fires as kv falls: not a line it rises to
        ("kv > -2.5", [("kv", -2.5)]),
        ("not (kv > 3) or waiting < 5", []),
        ("kv > waiting or ratio(kv, waiting) > 0.05", []),
        ('p("cuda_oom") >= 0.6 or state == "serving"', []),
        ("kv >", []),
    ],
)  # fmt: skip
def test_it_names_the_lines_a_rising_figure_crosses(text: str, limits: list) -> None:  # type: ignore[type-arg]
    assert upper_limits(text) == limits
