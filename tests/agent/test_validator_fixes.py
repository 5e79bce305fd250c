"""Every automatic fix the validator can offer is an action the agent accepts as given."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from agent.actions import REGISTRY
from agent.actions.base import validate

CHECKS = Path(__file__).resolve().parents[2] / "agent" / "checks"


def _offered_fixes() -> list[tuple[str, str, dict[str, object]]]:
    """Return (file, action, params) for each literal fix_action/fix_params pair in the checks."""
    fixes = []
    for path in sorted(CHECKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            pairs = _pairs(node)
            if "fix_action" in pairs and isinstance(pairs["fix_action"], ast.Constant):
                params = pairs.get("fix_params")
                keys = [k.value for k in params.keys] if isinstance(params, ast.Dict) else []  # type: ignore[union-attr]
                sample = {k: _sample(k) for k in keys}
                fixes.append((path.name, pairs["fix_action"].value, sample))
    return fixes


def _pairs(node: ast.AST) -> dict[str, ast.AST]:
    if isinstance(node, ast.Call):
        return {k.arg: k.value for k in node.keywords if k.arg}
    if isinstance(node, ast.Dict):
        return {
            k.value: v
            for k, v in zip(node.keys, node.values, strict=True)
            if isinstance(k, ast.Constant) and isinstance(k.value, str)
        }
    return {}


def _sample(key: str) -> object:
    """A value of the shape the check computes (the checks' values are computed at run time)."""
    samples = {
        "gpu_memory_utilization": 0.85,
        "tensor_parallel_size": 2,
        "max_model_len": 8192,
        "VLLM_LOGGING_LEVEL": "INFO",
    }
    return samples.get(key)


FIXES = _offered_fixes()


def test_it_finds_the_fixes_the_checks_offer() -> None:
    assert {action for _, action, _ in FIXES} == {"restart_with_args", "restart_with_env"}
    assert len(FIXES) >= 6


@pytest.mark.parametrize(("source", "action", "params"), FIXES)
def test_it_accepts_every_fix_the_validator_offers(source: str, action: str, params: dict) -> None:  # type: ignore[type-arg]
    assert action in REGISTRY, f"{source} offers unknown action {action}"
    assert validate(REGISTRY[action], params) == params
