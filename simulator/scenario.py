"""Scenarios: TOML timelines of effects from a fixed vocabulary (see scenarios/README.md).

A timeline's clock is the server's uptime: seconds since the current process started
serving. A restart starts it again from zero, so a scenario that ends in a crash replays
after the host comes back (unless `replay_after_restart = false`).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.catalog import DEFAULT_GPU, DEFAULT_MODEL, GIB, model_spec
from simulator.system import DISK_PATHS, ROOT_DISK_BYTES
from simulator.workload import LoadProfile, Shape

SCENARIO_DIR = Path(__file__).parent / "scenarios"
REQUIRED = object()

# kind -> {parameter: default}; REQUIRED parameters have no default.
VOCABULARY: dict[str, dict[str, Any]] = {
    "load": {"multiplier": REQUIRED, "ramp_s": 0.0},
    "prompt_length": {"multiplier": REQUIRED, "ramp_s": 0.0},
    "output_length": {"multiplier": REQUIRED, "ramp_s": 0.0},
    "gpu_memory_leak": {"mib_per_s": REQUIRED},
    "foreign_gpu_process": {"gib": REQUIRED, "ramp_s": 0.0, "gpu": 0, "pid": 48213},
    "cooling_failure": {"temp_rise_c": REQUIRED, "ramp_s": 60.0},
    "engine_stall": {},
    "nccl_hang": {"timeout_s": 600.0, "rank": 1},
    "engine_death": {"cause": "rpc_timeout"},
    "host_memory_leak": {"mib_per_s": REQUIRED},
    "fd_leak": {"per_s": REQUIRED},
    "disk_fill": {"mib_per_s": REQUIRED, "path": "/"},
    "ecc_errors": {"corrected_per_s": 0.0, "uncorrected": 0, "gpu": 0},
    "pcie_replays": {"per_s": REQUIRED, "gpu": 0},
    "xid": {"code": REQUIRED, "gpu": 0},
    "row_remap": {"gpu": 0, "uncorrected": 1, "corrected": 0, "pending": True, "failure": False},
    "retired_pages": {"gpu": 0, "sbe": 0, "dbe": 1, "pending": True},
    "gpu_lost": {"gpu": 0, "vanish": False},
    "restart": {},
}
# One-off effects that change a GPU's health; SimulatedNvml.apply_event applies them.
GPU_HEALTH_KINDS = ("xid", "row_remap", "retired_pages", "gpu_lost")
DEATH_CAUSES = ("rpc_timeout", "worker_died", "illegal_memory_access")


class ScenarioError(ValueError):
    """A scenario file that does not follow the vocabulary; the message says where."""


@dataclass(frozen=True, slots=True)
class Effect:
    kind: str
    at_s: float
    until_s: float | None
    params: dict[str, Any]

    def active(self, tau: float) -> bool:
        return self.at_s <= tau and (self.until_s is None or tau < self.until_s)

    def ramp(self, tau: float) -> float:
        """Return how far the effect has ramped in at `tau`, 0..1 (and back out after until_s)."""
        if tau < self.at_s:
            return 0.0
        ramp_s = self.params.get("ramp_s", 0.0)
        up = 1.0 if ramp_s <= 0 else min(1.0, (tau - self.at_s) / ramp_s)
        if self.until_s is None or tau < self.until_s:
            return up
        down = 1.0 if ramp_s <= 0 else min(1.0, (tau - self.until_s) / ramp_s)
        return up * (1.0 - down)


@dataclass(frozen=True, slots=True)
class ForeignProcess:
    gpu: int
    pid: int
    used_bytes: int


@dataclass(frozen=True, slots=True)
class Conditions:
    """What the scenario imposes on the server at one moment."""

    shape: Shape = field(default_factory=Shape)
    gpu_leak_mib_per_s: float = 0.0
    foreign: tuple[ForeignProcess, ...] = ()
    cooling_c: float = 0.0
    stalled: bool = False  # no engine step makes progress; /health still says 200
    pinned: bool = False  # a hung collective keeps GPU utilization at 100 %
    rss_leak_mib_per_s: float = 0.0
    fd_leak_per_s: float = 0.0
    ecc_per_s: dict[int, float] = field(default_factory=dict)
    pcie_per_s: dict[int, float] = field(default_factory=dict)
    disk_fill_mib_per_s: dict[str, float] = field(default_factory=dict)  # by path


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happens once, when the timeline passes `at_s`."""

    kind: str  # engine_death, nccl_timeout, restart, ecc_uncorrected, or a GPU_HEALTH_KINDS
    at_s: float
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HostSettings:
    model: str = DEFAULT_MODEL
    gpu_name: str = DEFAULT_GPU
    gpu_count: int = 1
    startup_scale: float = 0.1
    dev_mode: bool = False
    root_free_gib: float | None = None  # None: the usual root disk (simulator/system.py)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str = ""
    host: HostSettings = HostSettings()
    engine_args: dict[str, Any] = field(default_factory=dict)
    load: LoadProfile = field(default_factory=LoadProfile)
    effects: tuple[Effect, ...] = ()
    restart_after_death_s: float | None = None
    replay_after_restart: bool = True
    repeat_every_s: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    events: tuple[Event, ...] = ()  # the one-off events of `effects`, see one_off_events()

    def tau(self, uptime_s: float) -> float:
        """Return the timeline time at `uptime_s` (wrapped when the timeline repeats)."""
        return uptime_s % self.repeat_every_s if self.repeat_every_s > 0 else uptime_s

    def conditions(self, uptime_s: float) -> Conditions:
        if not self.effects:
            return CALM  # most hosts: skip the work
        return _conditions(self.effects, self.tau(uptime_s))

    def events_between(self, u0: float, u1: float) -> list[Event]:
        """Return the one-off events whose time lies in the uptime interval [u0, u1)."""
        return [e for e in self.events if self._crossed(e.at_s, u0, u1)]

    def _crossed(self, at: float, u0: float, u1: float) -> bool:
        period = self.repeat_every_s
        if period <= 0:
            return u0 <= at < u1
        cycle = (u0 // period) * period
        return any(u0 <= c + at < u1 for c in (cycle, cycle + period))


CALM = Conditions()


def one_off_events(effects: tuple[Effect, ...]) -> tuple[Event, ...]:
    """Return the events that happen once per timeline pass, in the effects' order."""
    found = []
    for e in effects:
        if e.kind in ("engine_death", "restart", *GPU_HEALTH_KINDS):
            found.append(Event(e.kind, e.at_s, e.params))
        elif e.kind == "nccl_hang":
            found.append(Event("nccl_timeout", e.at_s + e.params["timeout_s"], e.params))
        elif e.kind == "ecc_errors" and e.params["uncorrected"]:
            found.append(Event("ecc_uncorrected", e.at_s, e.params))
    return tuple(found)


def _conditions(effects: tuple[Effect, ...], tau: float) -> Conditions:
    mult = {"load": 1.0, "prompt_length": 1.0, "output_length": 1.0}
    sums = {"gpu_memory_leak": 0.0, "host_memory_leak": 0.0, "fd_leak": 0.0, "cooling": 0.0}
    foreign: list[ForeignProcess] = []
    ecc: dict[int, float] = {}
    pcie: dict[int, float] = {}
    disk: dict[str, float] = {}
    stalled = pinned = False
    for e in effects:
        p = e.params
        if e.kind in mult:
            mult[e.kind] *= 1.0 + (p["multiplier"] - 1.0) * e.ramp(tau)
        elif e.kind == "cooling_failure":
            sums["cooling"] += p["temp_rise_c"] * e.ramp(tau)
        elif e.kind == "foreign_gpu_process" and e.active(tau):
            used = int(p["gib"] * GIB * e.ramp(tau))
            foreign.append(ForeignProcess(p["gpu"], p["pid"], used))
        elif not e.active(tau):
            continue
        elif e.kind in ("gpu_memory_leak", "host_memory_leak"):
            sums[e.kind] += p["mib_per_s"]
        elif e.kind == "fd_leak":
            sums["fd_leak"] += p["per_s"]
        elif e.kind == "ecc_errors":
            ecc[p["gpu"]] = ecc.get(p["gpu"], 0.0) + p["corrected_per_s"]
        elif e.kind == "pcie_replays":
            pcie[p["gpu"]] = pcie.get(p["gpu"], 0.0) + p["per_s"]
        elif e.kind == "disk_fill":
            disk[p["path"]] = disk.get(p["path"], 0.0) + p["mib_per_s"]
        elif e.kind in ("engine_stall", "nccl_hang"):
            stalled = True
            pinned = pinned or e.kind == "nccl_hang"
    shape = Shape(mult["load"], mult["prompt_length"], mult["output_length"])
    return Conditions(
        shape=shape,
        gpu_leak_mib_per_s=sums["gpu_memory_leak"],
        foreign=tuple(foreign),
        cooling_c=sums["cooling"],
        stalled=stalled,
        pinned=pinned,
        rss_leak_mib_per_s=sums["host_memory_leak"],
        fd_leak_per_s=sums["fd_leak"],
        ecc_per_s=ecc,
        pcie_per_s=pcie,
        disk_fill_mib_per_s=disk,
    )


def available_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name: str) -> Scenario:
    """Return the scenario `name` (a file in scenarios/) or at the path `name` (*.toml)."""
    path = Path(name) if name.endswith(".toml") else SCENARIO_DIR / f"{name}.toml"
    if not path.is_file():
        raise ScenarioError(f"no scenario {name!r}; available: {', '.join(available_scenarios())}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return parse_scenario(path.stem, data)


def parse_scenario(name: str, data: dict[str, Any]) -> Scenario:
    """Return the scenario in decoded TOML `data`, or raise ScenarioError saying what is wrong."""
    _only(name, data, {"description", "host", "engine_args", "load", "lifecycle", "effects", "env"})
    lifecycle = data.get("lifecycle", {})
    _only(
        f"{name} [lifecycle]",
        lifecycle,
        {"restart_after_death_s", "replay_after_restart", "repeat_every_s"},
    )
    host = _host(name, data.get("host", {}), data.get("engine_args", {}))
    engine_args = dict(data.get("engine_args", {}))
    engine_args.setdefault("tensor_parallel_size", host.gpu_count)
    effects = tuple(_effect(name, i, raw) for i, raw in enumerate(data.get("effects", [])))
    return Scenario(
        name=name,
        description=data.get("description", ""),
        host=host,
        engine_args=engine_args,
        load=_load_profile(name, data.get("load", {})),
        effects=effects,
        events=one_off_events(effects),
        restart_after_death_s=lifecycle.get("restart_after_death_s"),
        replay_after_restart=lifecycle.get("replay_after_restart", True),
        repeat_every_s=float(lifecycle.get("repeat_every_s", 0.0)),
        env={k: str(v) for k, v in data.get("env", {}).items()},
    )


def _host(name: str, raw: dict[str, Any], engine_args: dict[str, Any]) -> HostSettings:
    _only(f"{name} [host]", raw, set(HostSettings.__dataclass_fields__))
    gpu_count = raw.get("gpu_count", engine_args.get("tensor_parallel_size", 1))
    host = HostSettings(**{**raw, "gpu_count": gpu_count})
    free = host.root_free_gib
    if free is not None and not (_is_number(free) and 0 < free * GIB < ROOT_DISK_BYTES):
        disk_gib = ROOT_DISK_BYTES / GIB
        raise ScenarioError(
            f"{name} [host]: root_free_gib must be above 0 and below the disk's {disk_gib:.0f} GiB"
        )
    try:
        model_spec(host.model)
    except ValueError as exc:
        raise ScenarioError(f"{name} [host]: {exc}") from None
    return host


def _load_profile(name: str, raw: dict[str, Any]) -> LoadProfile:
    _only(f"{name} [load]", raw, set(LoadProfile.__dataclass_fields__))
    return LoadProfile(**raw)


def _effect(name: str, index: int, raw: dict[str, Any]) -> Effect:
    where = f"{name} effects[{index}]"
    kind = raw.get("kind")
    if kind not in VOCABULARY:
        raise ScenarioError(f"{where}: kind {kind!r} is not one of {', '.join(VOCABULARY)}")
    spec = VOCABULARY[kind]
    _only(where, raw, {"kind", "at_s", "until_s", *spec})
    params = {k: raw.get(k, default) for k, default in spec.items()}
    missing = [k for k, v in params.items() if v is REQUIRED]
    if missing:
        raise ScenarioError(f"{where}: {kind} needs {', '.join(missing)}")
    _check_values(where, kind, params)
    if "at_s" not in raw:
        raise ScenarioError(f"{where}: at_s is required")
    return Effect(kind, float(raw["at_s"]), raw.get("until_s"), params)


def _check_values(where: str, kind: str, params: dict[str, Any]) -> None:
    if kind == "engine_death" and params["cause"] not in DEATH_CAUSES:
        raise ScenarioError(f"{where}: cause must be one of {', '.join(DEATH_CAUSES)}")
    if kind == "xid" and not (isinstance(params["code"], int) and params["code"] > 0):
        raise ScenarioError(f"{where}: code must be a positive integer (the Xid number)")
    if kind == "disk_fill" and not (_is_number(params["mib_per_s"]) and params["mib_per_s"] > 0):
        raise ScenarioError(f"{where}: mib_per_s must be a positive number")
    if kind == "disk_fill" and params["path"] not in DISK_PATHS:
        raise ScenarioError(f"{where}: path must be one of {', '.join(DISK_PATHS)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _only(where: str, raw: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
