from __future__ import annotations

import pytest

from agent.vllm_args import VllmArgsError, parse


def test_it_reads_a_vllm_serve_command_by_engine_argument_names() -> None:
    command = parse(
        [
            "vllm",
            "serve",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--max-num-seqs",
            "256",
            "--gpu-memory-utilization=0.9",
            "-tp",
            "2",
            "--enforce-eager",
            "--no-enable-prefix-caching",
            "--cudagraph-capture-sizes",
            "1",
            "2",
            "4",
            "-O0",
            "--port",
            "8000",
        ]
    )

    assert command.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert command.args == {
        "max_num_seqs": 256,
        "gpu_memory_utilization": 0.9,
        "tensor_parallel_size": 2,
        "enforce_eager": True,
        "enable_prefix_caching": False,
        "cudagraph_capture_sizes": ["1", "2", "4"],
        "optimization_level": 0,
        "port": 8000,
    }


def test_it_changes_only_the_arguments_asked_for() -> None:
    command = parse(["vllm", "serve", "m", "--max-num-seqs", "256", "--port", "8000"])

    changed = command.with_args({"max_num_seqs": 64, "enforce_eager": True, "port": None})

    assert changed.argv() == ["vllm", "serve", "m", "--max-num-seqs", "64", "--enforce-eager"]
    assert command.get("max_num_seqs") == 256  # the original is untouched


def test_it_reads_the_api_server_module_form_with_model_as_a_flag() -> None:
    command = parse(
        [
            "python",
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            "m",
            "--max-model-len",
            "8k",
        ]
    )
    assert command.model == "m"
    assert command.args == {"max_model_len": "8k"}
    assert command.argv() == [
        "python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "m",
        "--max-model-len",
        "8k",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["vllm", "bench", "m"], "not a vLLM server command"),
        (["vllm", "serve", "m", "stray"], "unexpected argument 'stray'"),
        (["vllm", "serve", "m", "--max-num-seqs", "many"], "--max-num-seqs 'many': not a number"),
    ],
)
def test_it_refuses_what_it_cannot_read(argv: list[str], message: str) -> None:
    with pytest.raises(VllmArgsError, match=message):
        parse(argv)
