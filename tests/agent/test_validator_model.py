"""The model checks on fake model folders: a config.json and safetensors files whose headers
declare the weights (the files are sparse, so a 16 GB model costs no disk)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from agent.checkpoint import ValidationCheck
from agent.checks.model import Deployment, parse_max_model_len, plan_memory
from agent.model_shape import CATALOG, find_model_dir, hf_cache_dir
from agent.validator import run_validation
from agent.vllm_args import parse
from simulator.nvml import SimulatedNvml, idle_gpu
from tests.agent.test_validator import fake_machine

H100_BYTES = 85_520_809_984
LLAMA_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], short: int = 0) -> int:
    """Write a safetensors file with `tensors` (name -> dtype, shape), sparse; return its bytes
    of tensor data. `short` leaves the file that many bytes shorter, like a partial download."""
    sizes = {"BF16": 2, "F32": 4}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for dim in shape:
            n *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header).encode()
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        f.truncate(8 + len(encoded) + offset - short)
    return offset


def fake_model(folder: Path, config: dict[str, object] | None = None, shards: int = 2) -> int:
    """Write an 8B-like model (16.06 GB of bf16 weights in `shards` files); return its bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or LLAMA_8B_CONFIG))
    (folder / "tokenizer.json").write_text("{}")
    weight_map, total = {}, 0
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        total += write_safetensors(
            folder / name, {f"layer{i}.weight": ("BF16", [8_030_000_000 // shards])}
        )
        weight_map[f"layer{i}.weight"] = name
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return total


def model_checks(
    argv: str, tmp_path: Path, environ: dict[str, str] | None = None, nvml: object = None
) -> dict[str, ValidationCheck]:
    report = run_validation(
        parse(argv.split()),
        vllm_url="http://127.0.0.1:8000",
        nvml=SimulatedNvml() if nvml is None else nvml,
        environ={"HOME": str(tmp_path / "home"), **(environ or {})},
        trigger="startup",
        machine=fake_machine(tmp_path / "machine"),
    )
    return {c.name: c for c in report.checks}


def test_it_sizes_a_local_model_from_its_config_and_weight_headers(tmp_path: Path) -> None:
    total = fake_model(tmp_path / "llama")
    checks = model_checks(f"vllm serve {tmp_path / 'llama'} --max-model-len 32768", tmp_path)

    files, fit = checks["model_files"], checks["model_fit"]
    assert total == 16_060_000_000
    assert files.status == "pass"
    assert "2 safetensors file(s), 14.96 GiB in local folder" in files.value
    assert (
        fit.status == "pass" and "config.json and weight headers in the local folder" in fit.message
    )
    assert fit.value.startswith("per GPU: budget 73.28 GiB = weights 14.96 GiB + overhead ~")
    assert fit.expected == "KV >= 32,768 tokens (max_model_len)"


def test_it_fails_when_one_max_length_request_does_not_fit_and_offers_the_length_that_does(
    tmp_path: Path,
) -> None:
    fake_model(tmp_path / "llama")
    fit = model_checks(f"vllm serve {tmp_path / 'llama'} --gpu-memory-utilization 0.3", tmp_path)[
        "model_fit"
    ]

    assert fit.status == "fail"
    assert "less than one request of max_model_len 131,072" in fit.message
    assert fit.fix_action == "restart_with_args"
    fitting = fit.fix_params["max_model_len"]
    assert 16 <= fitting < 131072 and fitting % 16 == 0  # whole KV blocks
    assert f"lower --max-model-len to {fitting}" in fit.fix


def test_it_fails_when_the_weights_leave_no_room_and_offers_more_tensor_parallelism(
    tmp_path: Path,
) -> None:
    fake_model(tmp_path / "llama")
    two_gpus = SimulatedNvml([idle_gpu(0), idle_gpu(1)])
    fit = model_checks(
        f"vllm serve {tmp_path / 'llama'} --gpu-memory-utilization 0.2", tmp_path, nvml=two_gpus
    )["model_fit"]

    assert fit.status == "fail" and "No available memory for the cache blocks" in fit.message
    assert (fit.fix_action, fit.fix_params) == ("restart_with_args", {"tensor_parallel_size": 2})


def test_it_warns_when_the_kv_cache_holds_few_full_length_requests(tmp_path: Path) -> None:
    fake_model(tmp_path / "llama")
    fit = model_checks(f"vllm serve {tmp_path / 'llama'} --gpu-memory-utilization 0.5", tmp_path)[
        "model_fit"
    ]
    assert fit.status == "warn" and "expect preemption under load" in fit.message


def test_it_refuses_a_max_model_len_beyond_the_models(tmp_path: Path) -> None:
    fake_model(tmp_path / "llama", {**LLAMA_8B_CONFIG, "max_position_embeddings": 8192})
    argv = f"vllm serve {tmp_path / 'llama'} --max-model-len 16k"

    fit = model_checks(argv, tmp_path)["model_fit"]
    assert fit.status == "fail" and "longer than the model's 8192" in fit.message
    assert fit.fix_params == {"max_model_len": 8192}

    allowed = model_checks(argv, tmp_path / "b", {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"})
    assert allowed["model_fit"].status == "pass"


def test_it_finds_a_model_in_the_hugging_face_cache(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--acme--llama-8b"
    fake_model(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")

    checks = model_checks("vllm serve acme/llama-8b", tmp_path, {"HF_HUB_CACHE": str(cache)})

    assert checks["model_files"].status == "pass"
    assert "Hugging Face cache" in checks["model_fit"].message
    assert find_model_dir("acme/llama-8b", cache, "abc123") is not None


def test_it_fails_on_a_truncated_or_missing_shard(tmp_path: Path) -> None:
    folder = tmp_path / "llama"
    fake_model(folder)
    write_safetensors(folder / "model-00002-of-00002.safetensors",
                      {"layer1.weight": ("BF16", [4_015_000_000])}, short=1000)  # fmt: skip
    truncated = model_checks(f"vllm serve {folder}", tmp_path)["model_files"]
    assert truncated.status == "fail"
    assert "model-00002-of-00002.safetensors is truncated" in truncated.message
    assert "partial download" in truncated.message

    (folder / "model-00002-of-00002.safetensors").unlink()
    missing = model_checks(f"vllm serve {folder}", tmp_path / "b")["model_files"]
    assert missing.status == "fail"
    assert (
        "model-00002-of-00002.safetensors is listed in model.safetensors.index.json but missing"
        in missing.message
    )


def test_it_fails_on_a_model_path_that_does_not_exist_or_cannot_be_downloaded(
    tmp_path: Path,
) -> None:
    gone = model_checks(f"vllm serve {tmp_path / 'nowhere'}", tmp_path)["model_files"]
    assert gone.status == "fail" and gone.message.endswith("does not exist")

    offline = model_checks("vllm serve acme/unknown-model", tmp_path / "b", {"HF_HUB_OFFLINE": "1"})
    assert (
        offline["model_files"].status == "fail"
        and "HF_HUB_OFFLINE" in offline["model_files"].message
    )
    assert offline["model_fit"].status == "skip"  # neither on disk nor in the catalog
    assert "nor in the catalog" in offline["model_fit"].message

    online = model_checks("vllm serve acme/unknown-model", tmp_path / "c", {"HF_TOKEN": "x"})
    assert (
        online["model_files"].status == "warn"
        and "HF_TOKEN is set" in online["model_files"].message
    )


def test_it_reproduces_vllms_kv_cache_for_the_reference_sample() -> None:
    # Reference §9: Llama-3.1-8B on one H100 80GB at 0.92 -> 445,632 KV tokens.
    plan = plan_memory(
        CATALOG["meta-llama/Llama-3.1-8B-Instruct"],
        Deployment(gpu_total_bytes=H100_BYTES, gpu_name="NVIDIA H100 80GB HBM3", utilization=0.92),
    )
    assert plan.kv_bytes_per_token == 131072
    assert plan.kv_tokens == pytest.approx(445_632, rel=0.03)


def test_it_splits_kv_heads_and_layers_across_gpus() -> None:
    shape = CATALOG["meta-llama/Llama-3.1-70B-Instruct"]
    assert shape.kv_bytes_per_token(2) == 2 * 80 * 8 * 128 * 2
    assert shape.kv_bytes_per_token(2, tp=4) == 2 * 80 * 2 * 128 * 2
    assert shape.kv_bytes_per_token(2, tp=16) == 2 * 80 * 1 * 128 * 2  # heads replicated
    assert shape.kv_bytes_per_token(1, tp=4, pp=2) == 2 * 40 * 2 * 128 * 1


@pytest.mark.parametrize(
    ("given", "tokens"),
    [
        ("32768", 32768),
        ("32k", 32000),
        ("32K", 32768),
        ("25.6k", 25600),
        ("-1", None),
        ("auto", None),
    ],
)
def test_it_reads_max_model_len_like_vllm(given: str, tokens: int | None) -> None:
    assert parse_max_model_len(given) == tokens


def test_it_looks_for_the_cache_where_huggingface_hub_does(tmp_path: Path) -> None:
    home = tmp_path
    assert hf_cache_dir({}, home) == home / ".cache/huggingface/hub"
    assert hf_cache_dir({"HF_HOME": "/data/hf"}, home) == Path("/data/hf/hub")
    assert hf_cache_dir({"HF_HUB_CACHE": "/x", "HF_HOME": "/y"}, home) == Path("/x")
    assert hf_cache_dir({"HF_HOME": "/y"}, home, download_dir="/models") == Path("/models")
