"""Checks of the software around vLLM: packages, the executable, NCCL settings, and the vLLM
flags and variables that would leave Sentinel blind."""

from __future__ import annotations

import sys
from pathlib import Path

from agent.checkpoint import ValidationCheck
from agent.checks.base import Context, env_path, failed, passed, skipped, warned

PACKAGES = ("vllm", "torch", "transformers", "nvidia-ml-py")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_STATS_INTERVAL_S = 60.0
NCCL_FLAGS = ("NCCL_P2P_DISABLE", "NCCL_IB_DISABLE", "NCCL_SHM_DISABLE", "NCCL_CUMEM_ENABLE")
IFNAME_VARIABLES = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")


def check_packages(ctx: Context) -> ValidationCheck:
    """The versions of vLLM, torch, transformers and nvidia-ml-py, and vLLM's own pins."""
    versions = {name: ctx.machine.package_version(name) for name in PACKAGES}
    value = ", ".join(f"{name} {versions[name] or '-'}" for name in PACKAGES)
    where = f"this Python environment ({sys.prefix})"
    if versions["vllm"] is None:
        return warned(
            "python_packages",
            f"vllm is not installed in {where}; if vLLM runs from "
            "another environment, its packages cannot be checked from here",
            value=value,
        )
    conflicts = _unmet_pins(ctx, versions)
    if conflicts:
        return failed(
            "python_packages",
            f"vllm {versions['vllm']} pins other versions: "
            f"{'; '.join(conflicts)} (expect 'undefined symbol' errors or crashes)",
            value=value,
            expected="what vllm requires",
            fix=f"pip install vllm=={versions['vllm']} in a fresh environment so pip "
            "picks the matching torch",
        )
    return passed("python_packages", value, value=value, expected="what vllm requires")


def _unmet_pins(ctx: Context, versions: dict[str, str | None]) -> list[str]:
    """Return "torch 2.7.0 installed, vllm requires ==2.8.0" for each unmet requirement."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # without packaging the pins cannot be read; the versions still show
        return []
    unmet = []
    for text in ctx.machine.package_requires("vllm"):
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        installed = versions.get(requirement.name)
        if installed is None or (requirement.marker and not requirement.marker.evaluate()):
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(
                f"{requirement.name} {installed} installed, vllm requires {requirement.specifier}"
            )
    return unmet


def check_vllm_command(ctx: Context) -> ValidationCheck:
    """The program the supervisor will start exists on PATH."""
    if ctx.command is None:
        return skipped("vllm_command", "no vLLM command: vLLM is started elsewhere")
    program = ctx.command.program[0]
    found = ctx.machine.which(program, env_path(ctx.environ))
    if found is None:
        return failed(
            "vllm_command",
            f"{program!r} is not found on PATH: vLLM cannot start",
            value=program,
            expected="an executable on PATH",
            fix="install vLLM (pip install vllm) or give the full path of the "
            "environment's vllm or python",
        )
    return passed("vllm_command", f"{' '.join(ctx.command.program)} -> {found}", value=found)


def check_nccl(ctx: Context) -> ValidationCheck:
    """NCCL_* settings are well formed and name network interfaces this host has."""
    problems, notes = _nccl_findings(ctx)
    set_vars = sorted(k for k in ctx.environ if k.startswith("NCCL_") or k in IFNAME_VARIABLES)
    value = ", ".join(f"{k}={ctx.environ[k]}" for k in set_vars) or "no NCCL_* variables"
    usage = "" if ctx.world_size > 1 else " (NCCL is only used with more than one GPU)"
    if problems:
        return failed(
            "nccl_env",
            "; ".join(problems) + usage,
            value=value,
            expected="interfaces that exist; flags 0 or 1",
            fix="name an existing interface (ip -br link), or unset the variable",
        )
    if notes:
        return warned(
            "nccl_env",
            "; ".join(notes) + usage,
            value=value,
            fix="unset these once the problem they work around is solved",
        )
    return passed("nccl_env", f"NCCL settings are sane ({value}){usage}", value=value)


def _nccl_findings(ctx: Context) -> tuple[list[str], list[str]]:
    """Return the settings NCCL cannot use, and the ones that work but cost something."""
    problems, notes = [], []
    interfaces = _interfaces(ctx.machine.net)
    for name in IFNAME_VARIABLES:
        setting = ctx.environ.get(name)
        if setting and interfaces is not None and not _names_an_interface(setting, interfaces):
            problems.append(f"{name}={setting} matches none of {', '.join(sorted(interfaces))}")
    for name in NCCL_FLAGS:
        setting = ctx.environ.get(name)
        if setting is not None and setting not in ("0", "1"):
            problems.append(f"{name}={setting} is not 0 or 1")
    if ctx.environ.get("NCCL_P2P_DISABLE") == "1":
        notes.append("NCCL_P2P_DISABLE=1 routes GPU traffic through the host (slower)")
    if ctx.environ.get("NCCL_DEBUG", "").upper() in ("TRACE", "INFO"):
        notes.append(f"NCCL_DEBUG={ctx.environ['NCCL_DEBUG']} floods the log")
    return problems, notes


def _interfaces(net: Path) -> set[str] | None:
    try:
        return {p.name for p in net.iterdir()}
    except OSError:
        return None


def _names_an_interface(setting: str, interfaces: set[str]) -> bool:
    """NCCL's syntax: a comma list of name prefixes, '=' for exact names, '^' to exclude."""
    if setting.startswith("^"):
        return True  # an exclusion list leaves the other interfaces
    exact = setting.startswith("=")
    for entry in setting.lstrip("=").split(","):
        entry = entry.strip()
        if entry and any(i == entry if exact else i.startswith(entry) for i in interfaces):
            return True
    return False


# ---------------------------------------------------------------------------- the monitor's view


def check_log_stats(ctx: Context) -> ValidationCheck:
    """--disable-log-stats removes every vllm: metric: Sentinel would see nothing."""
    if ctx.command is None:
        return skipped("vllm_log_stats", "no vLLM command to read")
    if ctx.arg("disable_log_stats"):
        return warned(
            "vllm_log_stats",
            "--disable-log-stats removes every vllm: metric and the "
            "stats log line: Sentinel cannot see load, KV cache or latency",
            value="--disable-log-stats",
            expected="stats enabled",
            fix="drop --disable-log-stats",
            fix_action="restart_with_args",
            fix_params={"disable_log_stats": None},
        )
    interval = float(ctx.environ.get("VLLM_LOG_STATS_INTERVAL", "10") or 10)
    if interval > MAX_STATS_INTERVAL_S:
        return warned(
            "vllm_log_stats",
            f"VLLM_LOG_STATS_INTERVAL={interval:g} s: the stats log "
            "line comes too rarely to follow",
            value=f"{interval:g} s",
            expected=f"<= {MAX_STATS_INTERVAL_S:g} s",
            fix="unset VLLM_LOG_STATS_INTERVAL (10 s)",
            fix_action="restart_with_env",
            fix_params={"VLLM_LOG_STATS_INTERVAL": None},
        )
    return passed("vllm_log_stats", "metrics and the stats log line are enabled", value="enabled")


def check_api_server_count(ctx: Context) -> ValidationCheck:
    """More than one API server disables the stats log line and the process metrics."""
    if ctx.command is None:
        return skipped("vllm_api_server_count", "no vLLM command to read")
    count = int(ctx.arg("api_server_count", 1) or 1)
    if count > 1:
        return warned(
            "vllm_api_server_count",
            f"--api-server-count {count} switches vLLM to "
            "multiprocess metrics: no stats log line and no process_* metrics for "
            "Sentinel",
            value=str(count),
            expected="1",
            fix="use one API server unless the HTTP front end is the bottleneck",
        )
    return passed("vllm_api_server_count", f"{count} API server", value=str(count), expected="1")


def check_logging_level(ctx: Context) -> ValidationCheck:
    """Above INFO, vLLM hides the stats line and the startup lines the lifecycle tracker reads."""
    if ctx.environ.get("VLLM_CONFIGURE_LOGGING") == "0":
        return warned(
            "vllm_logging_level",
            "VLLM_CONFIGURE_LOGGING=0: vLLM does not set up its log handlers, so its startup "
            "and stats lines may not appear",
            value="VLLM_CONFIGURE_LOGGING=0",
            expected="1 (the default)",
            fix="unset VLLM_CONFIGURE_LOGGING",
            fix_action="restart_with_env",
            fix_params={"VLLM_CONFIGURE_LOGGING": None},
        )
    level = ctx.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper()
    if level not in LOG_LEVELS:
        return _level_warning(level, f"VLLM_LOGGING_LEVEL={level} is not a level")
    if LOG_LEVELS.index(level) > LOG_LEVELS.index("INFO"):
        return _level_warning(
            level,
            f"VLLM_LOGGING_LEVEL={level} hides the stats line and the startup phases Sentinel "
            "follows",
        )
    return passed(
        "vllm_logging_level", f"VLLM_LOGGING_LEVEL={level}", value=level, expected="INFO or DEBUG"
    )


def _level_warning(level: str, message: str) -> ValidationCheck:
    return warned(
        "vllm_logging_level",
        message,
        value=level,
        expected="INFO or DEBUG",
        fix="set VLLM_LOGGING_LEVEL=INFO",
        fix_action="restart_with_env",
        fix_params={"VLLM_LOGGING_LEVEL": "INFO"},
    )
