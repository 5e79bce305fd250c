"""What an action is: a name, typed parameters with their ranges, and one coroutine.

    class Restart(Action):
        name = "restart"
        help = "Restart vLLM with the same arguments."

        async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
            return await ctx.vllm.restart()

Parameters are checked before anything runs (`validate`); a request with an unknown or bad
parameter is refused with a message naming the parameter and what is allowed. `refusal()`
refuses an action this agent cannot run at all (restart_with_args in attach mode without a
template). A failure while running raises ActionError; its message is the job's error.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from agent.control import VllmControl
from agent.events import EventLog
from agent.processes import Signaller

MAX_STR_CHARS = 256
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class ActionError(Exception):
    """The action ran and failed; the message is what the control plane sees."""


class ActionRefused(ValueError):
    """The request is not acceptable (HTTP 400); the message says which part and why."""


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Everything an action may touch."""

    vllm: VllmControl
    vllm_url: str
    events: EventLog
    nvml: Any | None  # pynvml or the simulator's look-alike; None without GPUs
    nvml_unavailable: str | None  # why nvml is None
    signaller: Signaller | None  # None: processes listed by NVML cannot be signalled here
    http_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Param:
    kind: str  # "int", "float", "bool", "str", "str_list"
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    default: Any = None  # used when absent (None: absent means "not given")
    nullable: bool = False  # null is allowed, and means "remove / unset"

    def describe(self) -> str:
        """Return what the parameter accepts, in words."""
        text = self._accepts()
        return text + " or null" if self.nullable else text

    def check(self, name: str, value: Any) -> Any:
        """Return `value` as the parameter's type, or raise ActionRefused saying why not."""
        if value is None and self.nullable:
            return None
        checked = _CHECKS[self.kind](self, value)
        if checked is _BAD:
            raise ActionRefused(f"{name} must be {self.describe()}, got {json.dumps(value)}")
        return checked

    def to_json(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": self.kind, "help": self.help}
        spec.update({k: v for k, v in self._limits().items() if v is not None and v != []})
        return spec

    def _limits(self) -> dict[str, Any]:
        return {"minimum": self.minimum, "maximum": self.maximum, "choices": list(self.choices),
                "pattern": self.pattern, "default": self.default,
                "nullable": self.nullable or None}  # fmt: skip

    def _accepts(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a number"
            return f"{noun} from {self.minimum:g} to {self.maximum:g}"
        if self.kind == "bool":
            return "true or false"
        return f"a string matching {self.pattern}" if self.pattern else "a string"


_BAD = object()


def _check_number(param: Param, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _BAD
    if param.kind == "int" and not isinstance(value, int):
        return _BAD
    if not math.isfinite(value):
        return _BAD
    assert param.minimum is not None and param.maximum is not None
    if not param.minimum <= value <= param.maximum:
        return _BAD
    return value if param.kind == "int" else float(value)


def _check_bool(param: Param, value: Any) -> Any:
    return value if isinstance(value, bool) else _BAD


def _check_str(param: Param, value: Any) -> Any:
    if not isinstance(value, str) or len(value) > MAX_STR_CHARS or _CONTROL_CHARS.search(value):
        return _BAD
    if param.choices and value not in param.choices:
        return _BAD
    if param.pattern and not re.fullmatch(param.pattern, value):
        return _BAD
    return value


def _check_str_list(param: Param, value: Any) -> Any:
    if not isinstance(value, list) or len(set(map(str, value))) != len(value):
        return _BAD
    return value if all(_check_str(param, v) is not _BAD for v in value) else _BAD


_CHECKS = {"int": _check_number, "float": _check_number, "bool": _check_bool,
           "str": _check_str, "str_list": _check_str_list}  # fmt: skip


class Action(ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    params: ClassVar[dict[str, Param]] = {}
    needs_a_param: ClassVar[bool] = False  # at least one parameter must be given

    def refusal(self, ctx: ActionContext, params: dict[str, Any]) -> str | None:
        """Return why this agent cannot run the action at all, or None."""
        return None

    @abstractmethod
    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        """Do it; return what happened (JSON-ready), or raise ActionError."""

    def describe(self) -> dict[str, Any]:
        return {"help": self.help, "params": {n: p.to_json() for n, p in self.params.items()}}


def validate(action: Action, raw: Any) -> dict[str, Any]:
    """Return the checked parameters of a request for `action`, defaults filled in."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ActionRefused(f"params must be a JSON object, got {json.dumps(raw)}")
    allowed = ", ".join(action.params) or "none"
    for name in raw:
        if name not in action.params:
            raise ActionRefused(f"{action.name}: unknown parameter {name!r}; allowed: {allowed}")
    if action.needs_a_param and not raw:
        raise ActionRefused(f"{action.name} needs at least one parameter of: {allowed}")
    checked = {name: action.params[name].check(name, value) for name, value in raw.items()}
    for name, param in action.params.items():
        if name not in checked and param.default is not None:
            checked[name] = param.default
    return checked
