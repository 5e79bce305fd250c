"""The pre-startup validator on this machine for real, and its host checks on a fake machine."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pynvml
import pytest

from agent.checkpoint import ValidationCheck
from agent.checks.base import GIB, MIB, DiskSpace, Machine, TorchBuild
from agent.validator import CHECKS, format_report, main, report_json, run_validation
from agent.vllm_args import parse
from simulator.nvml import SimulatedNvml
from tests.ports import free_port

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
STATUSES = {"pass", "warn", "fail", "skip"}


def fake_machine(tmp_path: Path, **changes: object) -> Machine:
    """Return a Linux host with plenty of everything, under `tmp_path`."""
    proc = tmp_path / "proc"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/osrelease").write_text("6.8.0-49-generic\n")
    (proc / "meminfo").write_text(
        "MemTotal:       2113455320 kB\nMemFree:        1900000000 kB\n"
        "MemAvailable:   2000000000 kB\n"
    )
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "os-release").write_text('NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n')
    net = tmp_path / "net"
    for name in ("lo", "eth0", "ib0"):
        (net / name).mkdir(parents=True)
    machine = Machine(
        proc=proc,
        etc=etc,
        net=net,
        shm=tmp_path / "shm",
        home=tmp_path / "home",
        platform="linux",
        disk_usage=lambda path: DiskSpace(2000 * GIB, 100 * GIB, 1900 * GIB),
        nofile_limits=lambda: (1_048_576, 1_048_576),
        package_version={
            "vllm": "0.21.0",
            "torch": "2.10.0",
            "transformers": "4.57.1",
            "nvidia-ml-py": "13.615.71",
        }.get,
        package_requires=lambda name: ["torch==2.10.0", "transformers>=4.56.0"],
        torch_build=lambda: TorchBuild("2.10.0", "12.8"),
        which=lambda program, path: f"/opt/venv/bin/{program}",
    )
    return replace(machine, **changes)  # type: ignore[arg-type]


def validate(
    argv: str | None, tmp_path: Path, environ: dict[str, str] | None = None, **machine: object
) -> dict[str, ValidationCheck]:
    command = parse(argv.split()) if argv else None
    report = run_validation(
        command,
        vllm_url="http://127.0.0.1:8000",
        nvml=None,
        environ={"HOME": str(tmp_path / "home"), **(environ or {})},
        trigger="startup",
        machine=fake_machine(tmp_path, **machine),
        now=1_781_503_200.0,
    )
    return {c.name: c for c in report.checks}


# ---------------------------------------------------------------------------- this machine


def test_it_runs_on_this_machine_and_says_per_check_what_it_cannot_see() -> None:
    # No GPU, no vLLM, no torch here: every check must still answer, and say why it skips.
    command = parse(["vllm", "serve", MODEL, "--port", str(free_port())])
    report = run_validation(
        command, vllm_url="http://127.0.0.1:8000", nvml=pynvml, environ=dict(os.environ),
        trigger="on_demand",
    )  # fmt: skip
    checks = {c.name: c for c in report.checks}

    assert [c.name for c in report.checks] == [name for name, _ in CHECKS]
    assert {c.status for c in report.checks} <= STATUSES
    assert (report.id, report.trigger, report.blocked) == (0, "on_demand", False)
    for name in ("nvidia_driver", "gpu_count", "gpu_free_memory", "gpu_health"):
        assert checks[name].status == "skip"
        assert checks[name].message.startswith("NVML cannot start: ")
    assert checks["cuda_compatibility"].status == "skip"
    assert "torch is not installed" in checks["cuda_compatibility"].message
    assert checks["python_packages"].status == "warn"
    assert "vllm is not installed" in checks["python_packages"].message
    assert checks["model_fit"].status == "skip"
    assert "14.96 GiB" in checks["model_fit"].value  # sized from the catalog
    assert checks["os"].status == "pass" and checks["port"].status == "pass"
    assert "the check itself failed" not in format_report(report)


def test_it_prints_a_table_and_json_from_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["--no-nvml", "vllm", "serve", MODEL, "--port", str(free_port())])
    table = capsys.readouterr().out
    assert table.startswith("vLLM pre-startup validation: ")
    assert "\nSTATUS  CHECK " in table and "model_fit" in table and "skip    nvidia_driver" in table
    assert status == (1 if "FAIL " in table else 0)

    main(["--json", "--no-nvml"])
    payload = json.loads(capsys.readouterr().out)
    assert payload["trigger"] == "on_demand" and payload["status"] in ("pass", "warn", "fail")
    assert {c["name"] for c in payload["checks"]} == {name for name, _ in CHECKS}


def test_it_refuses_a_command_that_is_not_vllm(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["python", "train.py"]) == 2
    assert "not a vLLM server command" in capsys.readouterr().err


# ---------------------------------------------------------------------------- robustness


def test_it_reports_a_check_that_raises_as_that_checks_failure(tmp_path: Path) -> None:
    def broken() -> tuple[int, int]:
        raise RuntimeError("getrlimit exploded")

    checks = validate(f"vllm serve {MODEL}", tmp_path, nofile_limits=broken)

    assert checks["open_files_limit"].status == "fail"
    assert checks["open_files_limit"].message == (
        "the check itself failed: RuntimeError: getrlimit exploded"
    )
    assert checks["host_memory"].status == "pass"  # the others still ran


def test_it_passes_a_healthy_host(tmp_path: Path) -> None:
    checks = validate(f"vllm serve {MODEL} --port {free_port()}", tmp_path)

    for name in ("os", "host_memory", "shm_size", "open_files_limit", "port", "disk_space",
                 "nccl_env", "python_packages", "vllm_command", "vllm_log_stats",
                 "vllm_api_server_count", "vllm_logging_level"):  # fmt: skip
        assert checks[name].status == "pass", checks[name]
    assert (
        checks["os"].message
        == "Linux: Ubuntu 24.04.1 LTS, kernel 6.8.0-49-generic, "
        + (checks["os"].value.split("generic, ")[1])
    )


# ---------------------------------------------------------------------------- host checks


def test_it_fails_on_another_os_and_warns_on_wsl(tmp_path: Path) -> None:
    assert validate(None, tmp_path, platform="darwin")["os"].status == "fail"
    (tmp_path / "wsl").mkdir()
    wsl = fake_machine(tmp_path / "wsl")
    (wsl.proc / "sys/kernel/osrelease").write_text("5.15.167.4-microsoft-standard-WSL2\n")
    checks = validate(None, tmp_path / "other", proc=wsl.proc)
    assert checks["os"].status == "warn" and "WSL2" in checks["os"].message


def test_it_judges_host_ram_against_workers_and_cpu_offloading(tmp_path: Path) -> None:
    proc = tmp_path / "small_proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 16777216 kB\nMemAvailable: 10485760 kB\n")  # 10 GiB

    tight = validate(f"vllm serve {MODEL} -tp 4", tmp_path, proc=proc)["host_memory"]
    assert tight.status == "warn" and tight.value == "10.00 GiB available of 16.00 GiB"
    assert tight.expected == ">= 12.00 GiB (4 GPU workers)"

    offload = validate(f"vllm serve {MODEL} --cpu-offload-gb 8 -tp 2", tmp_path / "b",
                       proc=proc)["host_memory"]  # fmt: skip
    assert offload.status == "fail" and "--cpu-offload-gb" in offload.fix

    roomy = validate(f"vllm serve {MODEL}", tmp_path / "c")["host_memory"]
    assert roomy.status == "pass"


def test_it_needs_a_large_dev_shm_for_tensor_parallelism(tmp_path: Path) -> None:
    docker_default = DiskSpace(64 * MIB, 0, 64 * MIB)

    def usage(path: Path) -> DiskSpace:
        return docker_default if path.name == "shm" else DiskSpace(2000 * GIB, 0, 1900 * GIB)

    tp = validate(f"vllm serve {MODEL} -tp 2", tmp_path, disk_usage=usage)["shm_size"]
    assert tp.status == "fail" and tp.value == "64 MiB (64 MiB free)"
    assert "--ipc=host" in tp.fix and "unhandled system error" in tp.message

    single = validate(f"vllm serve {MODEL}", tmp_path / "b", disk_usage=usage)["shm_size"]
    assert single.status == "pass"

    assert validate(f"vllm serve {MODEL} -tp 8", tmp_path / "c")["shm_size"].status == "pass"


def test_it_warns_when_the_hard_open_file_limit_caps_vllm(tmp_path: Path) -> None:
    low = validate(None, tmp_path, nofile_limits=lambda: (1024, 4096))["open_files_limit"]
    assert low.status == "warn" and low.value == "soft 1024, hard 4096"
    assert "Too many open files" in low.message and "LimitNOFILE=65535" in low.fix

    unlimited = validate(None, tmp_path / "b", nofile_limits=lambda: (-1, -1))
    assert unlimited["open_files_limit"].status == "pass"


def test_it_fails_when_the_port_is_taken(tmp_path: Path) -> None:
    with _listening() as port:
        taken = validate(f"vllm serve {MODEL} --port {port}", tmp_path)["port"]
    assert taken.status == "fail" and f":{port} is already in use" in taken.message
    assert "--port" in taken.fix

    free = validate(f"vllm serve {MODEL} --port {free_port()}", tmp_path / "b")["port"]
    assert free.status == "pass"
    assert validate(None, tmp_path / "c")["port"].status == "skip"  # vLLM runs elsewhere


def test_it_fails_when_the_disk_cannot_hold_the_download(tmp_path: Path) -> None:
    def usage(path: Path) -> DiskSpace:
        return DiskSpace(100 * GIB, 90 * GIB, 10 * GIB)

    disk = validate(f"vllm serve {MODEL}", tmp_path, disk_usage=usage)["disk_space"]

    assert disk.status == "fail" and "downloading the model" in disk.message
    assert ">= 15.70 GiB for downloading the model" in disk.expected  # 16 GB of bf16 + 5 %

    tiny = validate(None, tmp_path / "b", disk_usage=lambda p: DiskSpace(10 * GIB, 0, GIB))
    assert tiny["disk_space"].status == "fail" and "compile cache" in tiny["disk_space"].message


# ---------------------------------------------------------------------------- software


def test_it_checks_nccl_interfaces_and_flags(tmp_path: Path) -> None:
    def nccl(environ: dict[str, str], where: str) -> ValidationCheck:
        return validate(f"vllm serve {MODEL} -tp 2", tmp_path / where, environ)["nccl_env"]

    wrong = nccl({"NCCL_SOCKET_IFNAME": "enp65s0"}, "a")
    assert wrong.status == "fail"
    assert wrong.message == "NCCL_SOCKET_IFNAME=enp65s0 matches none of eth0, ib0, lo"
    assert nccl({"NCCL_SOCKET_IFNAME": "eth"}, "b").status == "pass"  # a prefix
    assert nccl({"NCCL_SOCKET_IFNAME": "=eth"}, "c").status == "fail"  # exact names only
    assert nccl({"NCCL_SOCKET_IFNAME": "^docker,lo"}, "d").status == "pass"
    assert nccl({"GLOO_SOCKET_IFNAME": "bond0"}, "e").status == "fail"
    assert nccl({"NCCL_P2P_DISABLE": "yes"}, "f").status == "fail"
    slow = nccl({"NCCL_P2P_DISABLE": "1"}, "g")
    assert slow.status == "warn" and "slower" in slow.message


def test_it_fails_when_vllm_pins_another_torch(tmp_path: Path) -> None:
    pins = validate(None, tmp_path, package_requires=lambda name: [
        "torch==2.9.0", "transformers>=4.56.0", 'pywin32; sys_platform == "win32"'])  # fmt: skip
    packages = pins["python_packages"]

    assert packages.status == "fail"
    assert "torch 2.10.0 installed, vllm requires ==2.9.0" in packages.message
    assert "transformers" not in packages.message  # that pin is met
    assert packages.value == (
        "vllm 0.21.0, torch 2.10.0, transformers 4.57.1, nvidia-ml-py 13.615.71"
    )


def test_it_fails_when_the_vllm_program_is_not_on_path(tmp_path: Path) -> None:
    missing = validate(f"vllm serve {MODEL}", tmp_path, which=lambda program, path: None)
    assert missing["vllm_command"].status == "fail"
    assert "'vllm' is not found on PATH" in missing["vllm_command"].message


def test_it_compares_torchs_cuda_with_the_drivers(tmp_path: Path) -> None:
    def compat(torch: TorchBuild | None, driver_cuda: int = 12080) -> ValidationCheck:
        machine = fake_machine(tmp_path / f"{torch}{driver_cuda}", torch_build=lambda: torch)
        report = run_validation(
            None,
            vllm_url="http://127.0.0.1:8000",
            nvml=SimulatedNvml(cuda_driver_version=driver_cuda),
            environ={},
            trigger="startup",
            machine=machine,
        )
        return next(c for c in report.checks if c.name == "cuda_compatibility")

    same = compat(TorchBuild("2.10.0", "12.8"))
    assert same.status == "pass"
    assert same.value == "torch 2.10.0 built for CUDA 12.8; driver supports CUDA 12.8"
    assert compat(TorchBuild("2.10.0", "12.9")).status == "warn"  # minor-version compatibility
    newer = compat(TorchBuild("2.10.0", "13.0"))
    assert newer.status == "fail" and "driver is too old" in newer.message
    assert compat(TorchBuild("2.10.0", None)).status == "fail"  # a CPU-only torch
    assert compat(None).status == "skip"


def test_it_flags_settings_that_blind_the_monitor(tmp_path: Path) -> None:
    blind = validate(
        f"vllm serve {MODEL} --disable-log-stats --api-server-count 4",
        tmp_path,
        {"VLLM_LOGGING_LEVEL": "WARNING"},
    )

    stats = blind["vllm_log_stats"]
    assert stats.status == "warn" and "removes every vllm: metric" in stats.message
    assert (stats.fix_action, stats.fix_params) == (
        "restart_with_args",
        {"disable_log_stats": None},
    )
    servers = blind["vllm_api_server_count"]
    assert servers.status == "warn" and "no stats log line" in servers.message
    level = blind["vllm_logging_level"]
    assert level.status == "warn" and "hides the stats line" in level.message
    assert (level.fix_action, level.fix_params) == (
        "restart_with_env",
        {"VLLM_LOGGING_LEVEL": "INFO"},
    )
    rare = validate(f"vllm serve {MODEL}", tmp_path / "b", {"VLLM_LOG_STATS_INTERVAL": "300"})
    assert rare["vllm_log_stats"].status == "warn"


def test_it_renders_fixes_and_actions_in_the_table(tmp_path: Path) -> None:
    report = run_validation(
        parse(["vllm", "serve", MODEL, "--disable-log-stats"]),
        vllm_url="http://127.0.0.1:8000", nvml=None, environ={}, trigger="startup",
        machine=fake_machine(tmp_path),
    )  # fmt: skip
    table = format_report(report)

    assert "WARN    vllm_log_stats" in table
    assert "action: restart_with_args(disable_log_stats=None)" in table
    assert json.loads(report_json(report))["checks"][0]["name"] == "os"


class _listening:
    """A socket listening on all interfaces, as a stale vLLM would."""

    def __enter__(self) -> int:
        self._sock = socket.socket()
        self._sock.bind(("", 0))
        self._sock.listen()
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
