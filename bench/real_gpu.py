"""Check the agent's GPU paths against a real NVIDIA GPU and driver; print what was seen.

Needs a machine with an NVIDIA GPU, pynvml (nvidia-ml-py) and a CUDA build of torch. CI has
no GPU, so the agent's tests use a fake NVML at the edge; this script is what checks the
same code against the real library. It exits 1 when an expectation fails.

1. The collector (agent.collectors.gpu) against pynvml: every field read or named in
   `missing`, plausible values, and the cost of one collect().
2. A second process holds GPU memory through torch: the collector must see the memory rise
   and list the process under the GPU.
3. The health diff between two readings of a healthy GPU raises no event; the XID watcher
   registers its event set (or says why not) and stops within its wait.
4. The validator's GPU checks (driver, CUDA of torch vs the driver, memory) on this machine.
5. The real agent supervising a simulated vLLM (`python -m simulator.vllm_process`), with
   GPU backend nvml: its /v1/checkpoint carries the GPU as NVML reads it, and the
   free_gpu_memory action, dry run then real, targets the holder and ends it.
6. Under load (bf16 matrix products for LOAD_S): utilization and power read by the collector
   rise, and the health diff reports only throttling that NVML itself reports.

    python3 bench/real_gpu.py [--json-out report.json]

`--simulated` runs the same steps against the simulator's NVML, to check the script itself
where there is no GPU: the holder is then a plain process that NVML cannot see.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import pynvml  # noqa: E402

from agent.checkpoint import THROTTLE_REASONS, Gpu  # noqa: E402
from agent.collectors.gpu import GpuCollector  # noqa: E402
from agent.events import EventLog  # noqa: E402
from agent.gpu_health import GpuHealthDiff, XidWatcher  # noqa: E402
from agent.validator import run_validation  # noqa: E402
from agent.vllm_args import parse  # noqa: E402
from bench.agent_cost import free_port  # noqa: E402

GIB = 1024**3
HOLD_GIB = 8
TOKEN = "real-gpu-check-0123456789abcdef"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# The child scripts' start: torch where there is one (not with --simulated).
TORCH = """
import time
try:
    import torch
except ImportError:
    torch = None
cuda = torch is not None and torch.cuda.is_available()
"""
HOLDER = (
    TORCH
    + f"""
if not cuda:
    print("holding", flush=True)
    time.sleep(600)
x = torch.empty({HOLD_GIB} * 1024**3, dtype=torch.uint8, device="cuda")
x.fill_(1)
torch.cuda.synchronize()
print("holding", flush=True)
time.sleep(600)
"""
)

LOAD_S = 20
LOAD = (
    TORCH
    + f"""
print("loading", flush=True)
if not cuda:
    time.sleep({LOAD_S})
else:
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    end = time.monotonic() + {LOAD_S}
    while time.monotonic() < end:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
"""
)
failures: list[str] = []
report: dict[str, Any] = {}


def expect(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def collector_readings(collector: GpuCollector) -> list[Gpu]:
    gpus, error = collector.collect(time.monotonic())
    expect(error is None, f"collect() without error ({error})")
    return gpus


def check_collector(nvml: Any) -> GpuCollector:
    print("1. collector against real NVML")
    collector = GpuCollector(nvml)
    gpus = collector_readings(collector)
    expect(len(gpus) >= 1, f"{len(gpus)} GPU(s) listed")
    timings = []
    for _ in range(50):
        start = time.perf_counter()
        collector.collect(time.monotonic())
        timings.append((time.perf_counter() - start) * 1000)
    report["collect_ms_median"] = statistics.median(timings)
    report["collect_ms_max"] = max(timings)
    print(f"  collect(): median {statistics.median(timings):.2f} ms, max {max(timings):.2f} ms")
    for gpu in gpus:
        as_json = msgspec.to_builtins(gpu)
        report.setdefault("gpus", []).append(as_json)
        print("  " + json.dumps(as_json, sort_keys=True))
        expect(bool(gpu.name), f"name read: {gpu.name}")
        expect(bool(gpu.uuid and gpu.uuid.startswith("GPU-")), f"uuid read: {gpu.uuid}")
        total, used = gpu.memory_total_bytes or 0, gpu.memory_used_bytes
        expect(total > 10 * GIB, f"memory total {total / GIB:.1f} GiB")
        expect(used is not None and 0 <= used <= total, f"memory used {(used or 0) / GIB:.2f} GiB")
        expect(
            gpu.temperature_c is not None and 0 < gpu.temperature_c < 110,
            f"temperature {gpu.temperature_c} C",
        )
        expect(
            gpu.power_w is not None
            and gpu.power_limit_w is not None
            and 0 < gpu.power_w <= 1.5 * gpu.power_limit_w,
            f"power {gpu.power_w} W of {gpu.power_limit_w} W",
        )
        expect((gpu.sm_clock_mhz or 0) > 0 and (gpu.mem_clock_mhz or 0) > 0, "clocks read")
        expect(
            set(gpu.throttle_reasons) <= set(THROTTLE_REASONS.values()),
            f"throttle reasons are known names: {gpu.throttle_reasons}",
        )
        expect(not gpu.lost, "not lost")
        print(f"  missing (NVML refused): {gpu.missing}")
    return collector


def start_holder() -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert holder.stdout is not None
    line = holder.stdout.readline().strip()
    if line != "holding":
        raise SystemExit(f"the torch holder did not start: {line!r}, exit {holder.poll()}")
    return holder


def check_holder(collector: GpuCollector, before: Gpu, holder: subprocess.Popen[str]) -> None:
    print(f"2. a process holding {HOLD_GIB} GiB through torch (pid {holder.pid})")
    gpu = collector_readings(collector)[before.index]
    rise = ((gpu.memory_used_bytes or 0) - (before.memory_used_bytes or 0)) / GIB
    report["holder_memory_rise_gib"] = rise
    expect(rise >= HOLD_GIB * 0.95, f"memory used rose {rise:.2f} GiB")
    listed = {p.pid: p.used_memory_bytes for p in gpu.processes}
    report["holder_listed"] = holder.pid in listed
    report["processes"] = [msgspec.to_builtins(p) for p in gpu.processes]
    print(f"  NVML lists: {report['processes']}")
    expect(holder.pid in listed, "the holder is listed under its GPU")


def check_health(nvml: Any, collector: GpuCollector) -> None:
    print("3. health diff and XID watcher")
    events = EventLog()
    diff = GpuHealthDiff(events)
    first = diff.update(collector_readings(collector), time.time())
    second = diff.update(collector_readings(collector), time.time())
    expect(not first and not second, f"no health events on a healthy GPU: {first + second}")

    async def watch() -> str | None:
        watcher = XidWatcher(nvml, events, clock=time.time)
        watcher.start()
        await asyncio.sleep(1.0)
        start = time.perf_counter()
        watcher.stop()
        report["xid_stop_ms"] = (time.perf_counter() - start) * 1000
        return watcher.missing_reason

    missing = asyncio.run(watch())
    report["xid_missing_reason"] = missing
    print(f"  XID watcher: {'registered' if missing is None else missing}")
    expect(report["xid_stop_ms"] < 2000, f"watcher stopped in {report['xid_stop_ms']:.0f} ms")


def check_validator(nvml: Any) -> None:
    print("4. the validator's GPU checks")
    command = parse(["vllm", "serve", MODEL, "--gpu-memory-utilization", "0.9"])
    result = run_validation(
        command, vllm_url="http://127.0.0.1:8000", nvml=nvml, environ={}, trigger="on_demand"
    )
    for check in result.checks:
        if check.name == "nvidia_driver" or "gpu" in check.name or "cuda" in check.name:
            print(f"  {check.status:5} {check.name}: {check.message}")
            report.setdefault("validator", {})[check.name] = [check.status, check.message]
    statuses = report.get("validator", {})
    expect(statuses.get("nvidia_driver", ["?"])[0] == "pass", "the driver check passes")
    expect(
        statuses.get("cuda_compatibility", ["?"])[0] in ("pass", "warn"),
        "torch's CUDA is checked against the driver's",
    )


def call(port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # the agent's refusal, with its reason
        return {"status": f"HTTP {exc.code}", "error": exc.read().decode()}


def run_action(port: int, key: str, params: dict[str, Any]) -> dict[str, Any]:
    request = {"action": "free_gpu_memory", "params": params, "idempotency_key": key}
    return wait_action(port, call(port, "/v1/actions", request))


def wait_action(port: int, job: dict[str, Any], timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while "id" in job and job.get("status") not in ("succeeded", "failed"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
        job = call(port, f"/v1/actions/{job['id']}")
    return job


def check_agent(backend: str, holder: subprocess.Popen[str], log_path: Path) -> None:
    print(f"5. the real agent (GPU backend {backend}) supervising a simulated vLLM")
    vllm_port, agent_port = free_port(), free_port()
    env = {**os.environ, "SENTINEL_AGENT_TOKEN": TOKEN, "SENTINEL_SIM_SPEED": "20"}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    argv = [sys.executable, "-m", "agent.main", "run", "--gpu-backend", backend]
    argv += ["--listen-port", str(agent_port), "--host-name", "real-gpu", "--"]
    argv += [sys.executable, "-m", "simulator.vllm_process", "serve", MODEL]
    argv += ["--port", str(vllm_port)]
    with log_path.open("w") as log:
        agent = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        checkpoint = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                checkpoint = call(agent_port, "/v1/checkpoint")
            except OSError:
                continue
            health = (checkpoint.get("vllm") or {}).get("health") or {}
            if checkpoint.get("gpus") and health.get("ok"):
                break
        assert checkpoint is not None, "the agent never answered"
        gpus = checkpoint.get("gpus", [])
        report["checkpoint_gpus"] = gpus
        report["checkpoint_missing"] = checkpoint.get("missing")
        report["checkpoint_gpu_backend"] = checkpoint.get("gpu_backend")
        report["checkpoint_validations"] = [
            {c["name"]: c["status"] for c in v.get("checks", [])}
            for v in checkpoint.get("validations", [])
        ]
        print(f"  gpu_backend {checkpoint.get('gpu_backend')}, missing {checkpoint.get('missing')}")
        expect(checkpoint.get("gpu_backend") == backend, "the checkpoint names its GPU backend")
        expect(
            bool(gpus) and gpus[0].get("name") == report["gpus"][0]["name"],
            "the checkpoint carries the GPU NVML names",
        )
        listed = {p["pid"] for g in gpus for p in g.get("processes", [])}
        expect(holder.pid in listed or not report.get("holder_listed"), "holder in the checkpoint")
        dry = run_action(agent_port, "dry-run", {"dry_run": True})
        report["free_gpu_memory_dry_run"] = dry
        print(f"  free_gpu_memory dry run: {dry.get('status')} {dry.get('result') or dry}")
        targets = {t["pid"] for t in (dry.get("result") or {}).get("targets", [])}
        expect(holder.pid in targets, "the dry run targets the holder")
        expect(holder.poll() is None, "the dry run left the holder running")
        real = run_action(agent_port, "real", {"term_timeout_s": 5})
        report["free_gpu_memory"] = real
        print(f"  free_gpu_memory: {real.get('status')} {real.get('result') or real}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            holder.wait(timeout=10)
        expect(holder.poll() is not None, f"the holder was ended (exit {holder.poll()})")
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()


def check_load(collector: GpuCollector) -> None:
    print(f"6. under load: bf16 matrix products for {LOAD_S} s")
    idle = collector_readings(collector)[0]
    events = EventLog()
    diff = GpuHealthDiff(events)
    diff.update([idle], time.time())
    load = subprocess.Popen([sys.executable, "-c", LOAD], stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    load.stdout.readline()
    readings, raised = [], []
    while load.poll() is None:
        time.sleep(0.5)
        gpus, _ = collector.collect(time.monotonic())
        if gpus:
            readings.append(gpus[0])
            raised += diff.update(gpus[:1], time.time())
    seen = {
        "utilization_max": max((g.utilization_gpu_pct or 0) for g in readings),
        "power_w_idle": idle.power_w,
        "power_w_max": max((g.power_w or 0) for g in readings),
        "sm_clock_idle": idle.sm_clock_mhz,
        "sm_clock_max": max((g.sm_clock_mhz or 0) for g in readings),
        "sm_clock_min": min((g.sm_clock_mhz or 0) for g in readings),
        "temperature_max": max((g.temperature_c or 0) for g in readings),
        "throttle_reasons": sorted({r for g in readings for r in g.throttle_reasons}),
        "events": [msgspec.to_builtins(e) for e in raised],
        "readings": len(readings),
    }
    report["load"] = seen
    print("  " + json.dumps(seen, default=str))
    expect(seen["utilization_max"] >= 50, f"utilization reached {seen['utilization_max']} %")
    power = seen["power_w_max"]
    expect(power > (idle.power_w or 0) + 100, f"power rose to {power} W")
    # No expectation on the direction of the SM clock: after step 5 the GPU may still be at
    # its boost clock, and under this load the power cap lowers it (1980 -> 1725 MHz on H200).
    expect(seen["sm_clock_min"] > 0, f"SM clock read under load: {seen['sm_clock_min']} MHz min")
    kinds = {e.kind for e in raised}
    throttled = set(seen["throttle_reasons"])
    power_capped = bool(throttled & {"sw_power_cap", "hw_power_brake_slowdown"})
    expect(
        kinds <= {"power_throttle", "thermal_throttle"}
        and ("power_throttle" not in kinds or power_capped)
        and ("thermal_throttle" not in kinds or any("thermal" in r for r in throttled)),
        f"events only for throttling NVML reported: {sorted(kinds)}",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json-out", type=Path, help="write what was seen here as JSON")
    parser.add_argument(
        "--agent-log", type=Path, default=Path(tempfile.gettempdir()) / "real-gpu-agent.log"
    )
    parser.add_argument("--simulated", action="store_true", help="the simulator's NVML")
    args = parser.parse_args()
    nvml: Any = pynvml
    if args.simulated:
        from simulator.nvml import SimulatedNvml

        nvml = SimulatedNvml()
    collector = check_collector(nvml)
    before = collector_readings(collector)[0]
    holder = start_holder()
    try:
        check_holder(collector, before, holder)
        check_health(nvml, collector)
        check_validator(nvml)
        check_agent("simulated" if args.simulated else "nvml", holder, args.agent_log)
        check_load(collector)
    finally:
        if holder.poll() is None:
            holder.kill()
        collector.close()
        report["failures"] = failures
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\n{len(failures)} expectation(s) failed" if failures else "\nall expectations held")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
