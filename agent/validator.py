"""The pre-startup validator: checks the host, the GPUs, the model and vLLM's settings before
vLLM starts (supervise mode) or on demand, and says for each what it measured, what would
pass and how to fix it.

    report = run_validation(command, vllm_url=..., nvml=pynvml, environ=os.environ,
                            trigger="startup")

1. NVML is asked once for the driver and every GPU's memory, processes and health.
2. Each check in CHECKS runs with the same Context; a check that raises is reported as its
   own failure, never as the validator's.
3. The report has id 0 (the EventLog numbers it) and `blocked=False`: the supervisor decides
   whether a failure stops vLLM from starting, and sets `blocked` when it does.

Fixes an agent action can apply carry `fix_action` ("restart_with_args" with vLLM argument
names, None removing a flag; "restart_with_env" with variable names, None unsetting one)
and `fix_params`.

On its own: `python -m agent.validator [--json] [--vllm-url URL] [vllm serve MODEL ...]`
prints the report as a table (or JSON); the exit status is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import msgspec

from agent.checkpoint import ValidationCheck, ValidationReport
from agent.checks import gpu, host, model, software
from agent.checks.base import Context, Machine, gather_nvml
from agent.vllm_args import VllmArgsError, VllmCommand, parse

Check = Callable[[Context], ValidationCheck]

# (name, check), in the order the report lists them: the platform first, then what builds
# on it. The name is what a check that raises is reported under.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("os", host.check_os),
    ("nvidia_driver", gpu.check_driver),
    ("cuda_compatibility", gpu.check_cuda_compat),
    ("python_packages", software.check_packages),
    ("vllm_command", software.check_vllm_command),
    ("gpu_count", gpu.check_gpu_count),
    ("gpu_health", gpu.check_gpu_health),
    ("gpu_free_memory", gpu.check_gpu_free_memory),
    ("model_files", model.check_model_files),
    ("model_fit", model.check_model_fit),
    ("host_memory", host.check_host_memory),
    ("shm_size", host.check_shm),
    ("open_files_limit", host.check_open_files),
    ("port", host.check_port),
    ("disk_space", host.check_disk),
    ("nccl_env", software.check_nccl),
    ("vllm_log_stats", software.check_log_stats),
    ("vllm_api_server_count", software.check_api_server_count),
    ("vllm_logging_level", software.check_logging_level),
)


def run_validation(
    command: VllmCommand | None,
    *,
    vllm_url: str,
    nvml: Any | None,
    environ: Mapping[str, str],
    trigger: str,
    machine: Machine | None = None,
    own_pids: Collection[int] = (),
    now: float | None = None,
) -> ValidationReport:
    """Return the report of every check (id 0: the caller numbers it through the EventLog).

    `environ` is the environment vLLM will run with; `own_pids` are the processes of a vLLM
    the agent runs now (their GPU memory counts as free: a restart releases it).
    """
    at = time.time() if now is None else now
    ctx = Context(
        command=command,
        vllm_url=vllm_url,
        environ=environ,
        machine=machine or Machine(),
        nvml=gather_nvml(nvml),
        own_pids=own_pids,
    )
    checks = [_run_one(name, check, ctx) for name, check in CHECKS]
    return ValidationReport(id=0, at=at, trigger=trigger, blocked=False, checks=checks)


def _run_one(name: str, check: Check, ctx: Context) -> ValidationCheck:
    try:
        return check(ctx)
    except Exception as exc:  # a broken check must not cost the other checks
        return ValidationCheck(
            name=name,
            status="fail",
            message=f"the check itself failed: {type(exc).__name__}: {exc}",
            fix="report this as a Sentinel bug, with the message",
        )


# ---------------------------------------------------------------------------- the report


def format_report(report: ValidationReport, width: int = 100) -> str:
    """Return the report as a readable table: a row per check (status, name, what was found),
    then what was measured, what would pass, the fix and the action that applies it."""
    counts = {
        s: sum(c.status == s for c in report.checks) for s in ("fail", "warn", "pass", "skip")
    }
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [f"vLLM pre-startup validation: {report.status.upper()} ({summary})", ""]
    name_width = max((len(c.name) for c in report.checks), default=5)
    lines.append(f"{'STATUS':<6}  {'CHECK':<{name_width}}  RESULT")
    indent = " " * (6 + 2 + name_width + 2)
    for c in report.checks:
        status = c.status.upper() if c.status in ("fail", "warn") else c.status
        first, *rest = _wrapped(c.message, indent, width) or [indent]
        lines.append(f"{status:<6}  {c.name:<{name_width}}  {first.strip()}")
        lines += rest
        for label, text in _details(c):
            lines += _wrapped(f"{label}: {text}", indent, width)
    return "\n".join(lines)


def _details(c: ValidationCheck) -> list[tuple[str, str]]:
    details = []
    if c.value and c.value not in c.message:
        details.append(("measured", c.value))
    if c.expected and c.status != "pass":
        details.append(("passes at", c.expected))
    if c.fix:
        details.append(("fix", c.fix))
    if c.fix_action:
        params = ", ".join(f"{k}={v!r}" for k, v in c.fix_params.items())
        details.append(("action", f"{c.fix_action}({params})"))
    return details


def _wrapped(text: str, indent: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ")


def report_json(report: ValidationReport) -> str:
    """Return the report as JSON: the checkpoint's ValidationReport fields, plus its status."""
    payload: dict[str, Any] = msgspec.to_builtins(report)
    return json.dumps({"status": report.status, **payload}, indent=2)


# ---------------------------------------------------------------------------- the CLI


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = None
    if args.command:
        try:
            command = parse(args.command)
        except VllmArgsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    report = run_validation(
        command,
        vllm_url=args.vllm_url or _url_of(command),
        nvml=None if args.no_nvml else _pynvml(),
        environ=os.environ,
        trigger="on_demand",
    )
    print(report_json(report) if args.json else format_report(report))
    return 1 if report.status == "fail" else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agent.validator",
        description="Check this host before starting vLLM (or now, without a command).",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--vllm-url", help="where vLLM listens (default: from --host/--port)")
    parser.add_argument("--no-nvml", action="store_true", help="skip the GPU checks")
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, help="the vLLM command, e.g. vllm serve MODEL ..."
    )
    return parser


def _url_of(command: VllmCommand | None) -> str:
    port = command.get("port", 8000) if command is not None else 8000
    return f"http://127.0.0.1:{port}"


def _pynvml() -> Any | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


if __name__ == "__main__":
    sys.exit(main())
