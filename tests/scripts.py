"""A script of the repository without a .py name (evaluate/run), loaded as a module."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def loaded(relative: str) -> Iterator[ModuleType]:
    """Yield the script at `relative` (to the repository) as a module, for a fixture."""
    name = relative.replace("/", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(ROOT / relative))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    loader.exec_module(module)
    yield module
    del sys.modules[name]
