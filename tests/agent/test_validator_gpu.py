"""The validator's GPU checks against the simulator's NVML: the same pynvml calls as on a host."""

from __future__ import annotations

import math
from pathlib import Path

from agent.checkpoint import ValidationCheck
from agent.validator import run_validation
from agent.vllm_args import parse
from simulator.catalog import GIB
from simulator.gpu import IDLE_USED_BYTES, GpuProcessUse
from simulator.nvml import SimulatedNvml, idle_gpu
from tests.agent.test_validator import fake_machine

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
H100_BYTES = 85_520_809_984


def gpu_checks(
    argv: str | None,
    nvml: SimulatedNvml,
    tmp_path: Path,
    environ: dict[str, str] | None = None,
    own_pids: tuple[int, ...] = (),
) -> dict[str, ValidationCheck]:
    report = run_validation(
        parse(argv.split()) if argv else None,
        vllm_url="http://127.0.0.1:8000",
        nvml=nvml,
        environ={"HOME": str(tmp_path / "home"), **(environ or {})},
        trigger="startup",
        machine=fake_machine(tmp_path),
        own_pids=own_pids,
    )
    return {c.name: c for c in report.checks}


def with_stray_notebook(gib: float, index: int = 0) -> SimulatedNvml:
    gpus = [idle_gpu(0), idle_gpu(1)]
    gpus[index].processes = [GpuProcessUse(48213, int(gib * GIB), "python3")]
    return SimulatedNvml(gpus)


def test_it_names_the_driver_and_its_cuda(tmp_path: Path) -> None:
    driver = gpu_checks(None, SimulatedNvml(), tmp_path)["nvidia_driver"]
    assert driver.status == "pass"
    assert driver.value == "driver 570.172.08, CUDA 12.8"


def test_it_fails_when_a_foreign_process_leaves_too_little_free_memory(tmp_path: Path) -> None:
    memory = gpu_checks(f"vllm serve {MODEL}", with_stray_notebook(10), tmp_path)["gpu_free_memory"]

    free = H100_BYTES - IDLE_USED_BYTES - 10 * GIB
    lowered = math.floor((free / H100_BYTES - 0.01) * 100) / 100
    assert memory.status == "fail"
    assert "Free memory on device" in memory.message
    assert memory.value == f"GPU 0: {free / GIB:.2f} GiB free of {H100_BYTES / GIB:.2f} GiB"
    assert memory.expected == f">= {0.92 * H100_BYTES / GIB:.2f} GiB (0.92 x total)"
    assert "pid 48213 (python3, 10.00 GiB) on GPU 0" in memory.fix
    assert (memory.fix_action, memory.fix_params) == (
        "restart_with_args",
        {"gpu_memory_utilization": lowered},
    )
    assert lowered == 0.85  # 86.8 % free, less a 1 % margin


def test_it_counts_the_memory_of_the_vllm_it_runs_as_free(tmp_path: Path) -> None:
    # An on-demand check while the supervised vLLM holds its memory: a restart frees it.
    memory = gpu_checks(
        f"vllm serve {MODEL}", with_stray_notebook(70), tmp_path, own_pids=(48213,)
    )["gpu_free_memory"]
    assert memory.status == "pass"


def test_it_warns_about_a_small_foreign_process_that_still_fits(tmp_path: Path) -> None:
    memory = gpu_checks(f"vllm serve {MODEL}", with_stray_notebook(1), tmp_path)["gpu_free_memory"]
    assert memory.status == "warn" and "pid 48213 (python3, 1.00 GiB)" in memory.message


def test_it_only_checks_the_gpus_cuda_will_show_vllm(tmp_path: Path) -> None:
    nvml = with_stray_notebook(30, index=0)
    hidden = gpu_checks(f"vllm serve {MODEL}", nvml, tmp_path, {"CUDA_VISIBLE_DEVICES": "1"})
    assert hidden["gpu_free_memory"].status == "pass"
    assert hidden["gpu_count"].value == "1 visible (CUDA_VISIBLE_DEVICES=1)"

    by_uuid = nvml.gpus[0].uuid[:12]  # a UUID prefix selects too
    shown = gpu_checks(f"vllm serve {MODEL}", nvml, tmp_path / "b",
                       {"CUDA_VISIBLE_DEVICES": by_uuid})  # fmt: skip
    assert shown["gpu_free_memory"].status == "fail"


def test_it_fails_when_tensor_parallelism_needs_more_gpus_than_are_visible(tmp_path: Path) -> None:
    nvml = SimulatedNvml([idle_gpu(0), idle_gpu(1)])
    count = gpu_checks(f"vllm serve {MODEL} -tp 4", nvml, tmp_path)["gpu_count"]

    assert count.status == "fail"
    assert count.message.startswith("vLLM needs 4 GPUs and only 2 are visible")
    assert (count.value, count.expected) == ("2 visible", ">= 4 (tensor 4 x pipeline 1)")
    assert (count.fix_action, count.fix_params) == (
        "restart_with_args",
        {"tensor_parallel_size": 2},
    )

    enough = gpu_checks(f"vllm serve {MODEL} -tp 2", nvml, tmp_path / "b")["gpu_count"]
    assert enough.status == "pass"


def test_it_refuses_a_tensor_parallel_size_that_does_not_divide_the_heads(tmp_path: Path) -> None:
    nvml = SimulatedNvml([idle_gpu(i) for i in range(3)])
    count = gpu_checks(f"vllm serve {MODEL} -tp 3", nvml, tmp_path)["gpu_count"]

    assert count.status == "fail"
    assert "has 32 attention heads, not divisible by --tensor-parallel-size 3" in count.message


def test_it_reports_gpus_that_need_a_reset_or_replacement(tmp_path: Path) -> None:
    nvml = SimulatedNvml([idle_gpu(0), idle_gpu(1)])
    nvml.apply_event("row_remap", {"gpu": 0, "corrected": 0, "uncorrected": 1,
                                   "pending": True, "failure": False})  # fmt: skip
    pending = gpu_checks(f"vllm serve {MODEL}", nvml, tmp_path)["gpu_health"]
    assert pending.status == "warn" and pending.message == "GPU 0: remapped rows pending"
    assert "nvidia-smi -r" in pending.fix

    nvml.apply_event("gpu_lost", {"gpu": 1, "vanish": False})
    lost = gpu_checks(f"vllm serve {MODEL} -tp 2", nvml, tmp_path / "b")["gpu_health"]
    assert lost.status == "fail"
    assert lost.message == "GPU 1 has fallen off the bus; GPU 0: remapped rows pending"


def test_it_sizes_the_catalog_model_against_the_simulated_h100(tmp_path: Path) -> None:
    fit = gpu_checks(f"vllm serve {MODEL} --max-model-len 32768", SimulatedNvml(), tmp_path)[
        "model_fit"
    ]
    assert fit.status == "pass" and "built-in catalog" in fit.message
    assert "weights 14.96 GiB" in fit.value
