"""The guardrail condition language: small, safe, and checked when a policy is saved.

    kv_cache_usage_pct > 95 and requests_waiting > 10
    p("cuda_oom") >= 0.6 or eta("cuda_oom") < 300
    state in ("failed_engine_dead", "failed_hang") or gpu_events("critical") > 0
    ratio(requests_failed_per_s, requests_finished_per_s) > 0.05

Numbers, strings, True/False/None, tuples; `and or not`; comparisons (`< <= > >= == !=
in`, chained); `+ - * /` and unary minus; names from the evaluation context; and calls of the
functions in FUNCTIONS only. Nothing else parses: no attributes, subscripts, lambdas,
comprehensions or keyword arguments, so no text can reach Python objects. The text is parsed
with Python's `ast` (parsing never runs it) and compiled into closures over that whitelist.

A missing figure is NaN: every comparison with NaN is false, so a condition over a metric the
host does not report never fires.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_CHARS = 2000
MAX_NODES = 200

Env = Mapping[str, Any]  # name -> value, and "__functions__" -> FUNCTIONS bound to the context
Compiled = Callable[[Env], Any]


class ExpressionError(ValueError):
    """The text is not a valid condition; the message says where and why."""


def _ratio(a: float, b: float) -> float:
    return a / b if b else (math.nan if a == 0 else math.inf)


# Pure helpers; the context supplies p(), eta() and gpu_events() (mitigations/guardrails.py).
PURE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "ratio": _ratio,  # a / b, NaN for 0/0, inf for x/0
}
CONTEXT_FUNCTIONS = ("p", "eta", "gpu_events", "errors")

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}  # fmt: skip
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: _ratio,
}  # fmt: skip


@dataclass(frozen=True)
class Expression:
    text: str
    names: frozenset[str]  # the context names it reads
    _run: Compiled

    def evaluate(self, env: Env) -> bool:
        """Return the condition's truth in `env`; any runtime error counts as false."""
        try:
            return bool(self._run(env))
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            return False


def compile_condition(text: str, names: frozenset[str] | set[str]) -> Expression:
    """Return `text` compiled, or raise ExpressionError saying what is wrong and where.

    `names` are the context names a condition may read (the checked vocabulary)."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("the condition is empty")
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"the condition is longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a condition: {exc.msg} at column {exc.offset}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ExpressionError(f"the condition has more than {MAX_NODES} parts")
    used: set[str] = set()
    run = _Compiler(frozenset(names), used).visit(tree.body)
    return Expression(text.strip(), frozenset(used), run)


def upper_limits(text: str) -> list[tuple[str, float]]:
    """Return the (name, number) of every "name > number" (or >=, or "number < name") in a
    condition: the lines a rising figure crosses on its way to firing it. Comparisons under
    `not` are left out (there the figure falls to fire); text that does not parse gives none.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, AttributeError):
        return []
    found: list[tuple[str, float]] = []
    _limits_in(tree.body, found)
    return found


def _limits_in(node: ast.AST, found: list[tuple[str, float]]) -> None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        for op, a, b in zip(node.ops, operands, operands[1:], strict=False):
            if isinstance(op, ast.Gt | ast.GtE) and isinstance(a, ast.Name):
                name, limit = a.id, _number(b)
            elif isinstance(op, ast.Lt | ast.LtE) and isinstance(b, ast.Name):
                name, limit = b.id, _number(a)
            else:
                continue
            if limit is not None:
                found.append((name, limit))
    for child in ast.iter_child_nodes(node):
        _limits_in(child, found)


def _number(node: ast.AST) -> float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return None if isinstance(node.value, bool) else float(node.value)
    return None


class _Compiler:
    def __init__(self, names: frozenset[str], used: set[str]) -> None:
        self.names, self.used = names, used

    def visit(self, node: ast.AST) -> Compiled:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(f"{_what(node)} is not allowed{_at(node)}")
        result: Compiled = method(node)
        return result

    def _Constant(self, node: ast.Constant) -> Compiled:
        value = node.value
        if not isinstance(value, int | float | str | bool | type(None)):
            raise ExpressionError(f"the constant {value!r} is not allowed{_at(node)}")
        return lambda env: value

    def _Tuple(self, node: ast.Tuple) -> Compiled:
        parts = [self.visit(e) for e in node.elts]
        return lambda env: tuple(p(env) for p in parts)

    def _Name(self, node: ast.Name) -> Compiled:
        name = node.id
        if name in ("True", "False", "None"):  # pragma: no cover - parsed as constants
            value = {"True": True, "False": False, "None": None}[name]
            return lambda env: value
        if name not in self.names:
            raise ExpressionError(f"unknown name {name!r}{_at(node)}; {_near(name, self.names)}")
        self.used.add(name)
        return lambda env: env.get(name, math.nan)

    def _BoolOp(self, node: ast.BoolOp) -> Compiled:
        parts = [self.visit(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda env: all(p(env) for p in parts)
        return lambda env: any(p(env) for p in parts)

    def _UnaryOp(self, node: ast.UnaryOp) -> Compiled:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda env: not operand(env)
        if isinstance(node.op, ast.USub):
            return lambda env: -operand(env)
        raise ExpressionError(f"the operator {_what(node.op)} is not allowed{_at(node)}")

    def _BinOp(self, node: ast.BinOp) -> Compiled:
        fn = _ARITH.get(type(node.op))
        if fn is None:
            raise ExpressionError(f"the operator {_what(node.op)} is not allowed{_at(node)}")
        left, right = self.visit(node.left), self.visit(node.right)
        return lambda env: fn(left(env), right(env))

    def _Compare(self, node: ast.Compare) -> Compiled:
        fns = []
        for op in node.ops:
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise ExpressionError(f"the comparison {_what(op)} is not allowed{_at(node)}")
            fns.append(fn)
        operands = [self.visit(node.left)] + [self.visit(c) for c in node.comparators]

        def compare(env: Env) -> bool:
            values = [o(env) for o in operands]
            return all(f(a, b) for f, a, b in zip(fns, values, values[1:], strict=False))

        return compare

    def _Call(self, node: ast.Call) -> Compiled:
        if not isinstance(node.func, ast.Name):
            raise ExpressionError(f"only named functions may be called{_at(node)}")
        name = node.func.id
        if node.keywords:
            raise ExpressionError(f"{name}() takes no keyword arguments{_at(node)}")
        args = [self.visit(a) for a in node.args]
        if name in PURE_FUNCTIONS:
            fn = PURE_FUNCTIONS[name]
            return lambda env: fn(*(a(env) for a in args))
        if name in CONTEXT_FUNCTIONS:
            if len(args) != 1 or not isinstance(node.args[0], ast.Constant):
                raise ExpressionError(f'{name}() takes one quoted name, e.g. {name}("cuda_oom")')
            self.used.add(f"{name}()")
            return lambda env: env["__functions__"][name](*(a(env) for a in args))
        known = sorted([*PURE_FUNCTIONS, *CONTEXT_FUNCTIONS])
        raise ExpressionError(f"unknown function {name!r}{_at(node)}; known: {', '.join(known)}")


def _what(node: ast.AST) -> str:
    return {
        "Attribute": "attribute access (a.b)",
        "Subscript": "indexing (a[b])",
        "Lambda": "lambda",
        "ListComp": "a comprehension",
        "GeneratorExp": "a comprehension",
        "Pow": "**",
        "Mod": "%",
        "FloorDiv": "//",
        "Is": "is",
        "IsNot": "is not",
        "IfExp": "if-else",
        "NamedExpr": ":=",
    }.get(type(node).__name__, type(node).__name__)


def _at(node: ast.AST) -> str:
    col = getattr(node, "col_offset", None)
    return "" if col is None else f" (column {col + 1})"


def _near(name: str, names: frozenset[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(names), n=3)
    return f"did you mean {', '.join(close)}?" if close else "see the list of names"
