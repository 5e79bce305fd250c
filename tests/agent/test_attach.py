"""Attach mode: follow a log file or a journal command, restart through configured argv."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import psutil
import pytest

from agent.agent import Agent
from agent.attach import AttachedVllm, engine_args_from_server_info
from agent.control import ControlError
from agent.logsources import CommandLines, FileTail, LogFanout
from agent.main import TOKEN_ENV, main
from simulator.scenario import load_scenario
from simulator.server import VllmHttpServer
from tests.agent.conftest import make_config
from tests.agent.test_supervisor_support import Recorder
from tests.simulator.support import make_sim, run_until, serving

# Writes its arguments as JSON to the file named first, then exits with the code named second.
RECORD = (
    "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[3:])); "
    "sys.exit(int(sys.argv[2]))"
)
CMDLINE = ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--max-num-seqs", "256"]


async def test_it_follows_a_log_file_across_rotation_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "vllm.log"
    path.write_text("old line, before the agent came\n")
    logs = LogFanout()
    seen = Recorder(logs)
    tail = FileTail(path, logs)
    tail.poll()
    with path.open("a") as f:
        f.write("INFO 11-27 10:00:00 [core.py:1] one\npartial ")
    tail.poll()
    with path.open("a") as f:
        f.write("two\n")
    tail.poll()
    path.rename(tmp_path / "vllm.log.1")  # logrotate: move away, then a new file
    with (tmp_path / "vllm.log.1").open("a") as f:
        f.write("three, written to the old file before it was let go\n")
    path.write_text("four, in the new file\n")
    tail.poll()
    path.write_text("")  # copytruncate
    tail.poll()
    with path.open("a") as f:
        f.write("five\n")
    tail.poll()
    await tail.close()
    assert seen.texts() == [
        "INFO 11-27 10:00:00 [core.py:1] one",
        "partial two",
        "three, written to the old file before it was let go",
        "four, in the new file",
        "five",
    ]
    assert {line.stream for line in seen.lines} == {"file"}


async def test_it_follows_a_file_that_appears_later(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    logs = LogFanout()
    seen = Recorder(logs)
    tail = FileTail(path, logs, poll_s=0.01)
    await tail.start()
    try:
        path.write_text("vLLM started after the agent\n")
        await seen.wait_for("vLLM started after the agent", timeout_s=5)
    finally:
        await tail.close()


async def test_it_follows_the_output_of_a_journal_command_and_runs_it_again(
    tmp_path: Path,
) -> None:
    logs = LogFanout()
    seen = Recorder(logs)
    argv = [sys.executable, "-c", "print('(APIServer pid=7) INFO 11-27 10:00:00 [x.py:1] hi')"]
    lines = CommandLines(argv, logs, restart_s=0.01)
    await lines.start()
    try:
        await seen.wait_for("[x.py:1] hi", times=2)
    finally:
        await lines.close()
    assert seen.lines[0].stream == "journal"
    assert seen.count(f"{sys.executable} ended (exit code 0); following again") >= 1


async def test_it_restarts_through_the_configured_argv(tmp_path: Path) -> None:
    marker = tmp_path / "restart.json"
    config = make_config(
        "http://127.0.0.1:8000",
        restart_command=[sys.executable, "-c", RECORD, str(marker), "0", "restart", "vllm"],
    )
    vllm = AttachedVllm(config, LogFanout())
    seen = Recorder(vllm.logs)
    result = await vllm.restart()
    assert json.loads(marker.read_text()) == ["restart", "vllm"]
    assert result["returncode"] == 0 and result["command"][-2:] == ["restart", "vllm"]
    assert seen.count("the restart command exited with code 0") == 1


async def test_it_reports_a_failing_restart_command(tmp_path: Path) -> None:
    config = make_config(
        "http://127.0.0.1:8000",
        restart_command=[sys.executable, "-c", RECORD, str(tmp_path / "x"), "3"],
    )
    with pytest.raises(ControlError, match=r"exited with code 3"):
        await AttachedVllm(config, LogFanout()).restart()


async def test_it_restarts_with_changed_args_and_env_through_the_template(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "relaunch.json"
    template = [sys.executable, "-c", RECORD, str(marker), "0", "{env}", "--", "{vllm_argv}"]
    config = make_config("http://127.0.0.1:8000", vllm_cmdline=CMDLINE, restart_template=template)
    vllm = AttachedVllm(config, LogFanout())

    await vllm.restart(args={"max_num_seqs": 64}, env={"NCCL_P2P_DISABLE": "1"})

    assert json.loads(marker.read_text()) == [
        "NCCL_P2P_DISABLE=1", "--", *CMDLINE[:3], "--max-num-seqs", "64",
    ]  # fmt: skip
    assert vllm.command is not None and vllm.command.args == {"max_num_seqs": 64}


def test_it_refuses_changed_args_without_a_template_or_a_command_line() -> None:
    plain = AttachedVllm(make_config("http://127.0.0.1:8000"), LogFanout())
    assert plain.restart_refusal(args=False, env=False) == (
        "attach mode without a restart_command: configure how to restart vLLM"
    )
    assert "without a restart_template" in (plain.restart_refusal(args=True, env=False) or "")
    env_only = make_config("http://127.0.0.1:8000", restart_template=["relaunch", "{env}"])
    vllm = AttachedVllm(env_only, LogFanout())
    assert vllm.restart_refusal(args=False, env=True) is None
    assert "without vllm_cmdline" in (vllm.restart_refusal(args=True, env=False) or "")


def test_it_refuses_a_template_without_placeholders() -> None:
    with pytest.raises(ValueError, match="restart_template uses neither of"):
        make_config("http://127.0.0.1:8000", restart_template=["systemctl", "restart", "vllm"])


def test_it_reads_engine_args_from_nested_and_flat_server_info() -> None:
    nested = {
        "vllm_config": {
            "model_config": {"model": "m", "max_model_len": 8192, "hf_config": {"x": 1}},
            "cache_config": {"gpu_memory_utilization": 0.9, "cache_dtype": "fp8"},
            "scheduler_config": {"max_num_seqs": 128, "policy": "fcfs"},
        }
    }
    assert engine_args_from_server_info(nested) == {
        "model": "m", "max_model_len": 8192, "gpu_memory_utilization": 0.9,
        "kv_cache_dtype": "fp8", "max_num_seqs": 128,
    }  # fmt: skip
    assert engine_args_from_server_info({"vllm_config": '{"max_num_seqs": 8}'}) == {
        "max_num_seqs": 8
    }
    assert engine_args_from_server_info({"detail": "Not Found"}) == {}


async def test_it_takes_engine_args_from_a_dev_mode_vllm_when_attached() -> None:
    scenario = load_scenario("healthy")
    scenario = dataclasses.replace(
        scenario,
        host=dataclasses.replace(scenario.host, dev_mode=True),
        engine_args={**scenario.engine_args, "max_num_seqs": 96},
    )
    sim = make_sim(scenario)
    run_until(sim, serving, 60)
    http = VllmHttpServer(sim)
    await http.sync()
    agent = Agent(make_config(http.url), process_source=psutil.Process(os.getpid()))
    try:
        cp = await agent.collect()
    finally:
        await agent.close()
        await http.close()
    assert cp.mode == "attach"
    assert cp.engine_args["max_num_seqs"] == 96 and cp.engine_args["max_model_len"] == 32768


def test_it_reads_attach_settings_from_a_config_file(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(TOKEN_ENV, "config-file-test-token")
    config = tmp_path / "agent.toml"
    config.write_text('restart_command = ["systemctl", "restart", "vllm"]\nlog_files = "x"\n')
    assert main(["--config", str(config)]) == 2
    assert "unknown settings log_files" in capsys.readouterr().err
    config.write_text('restart_template = ["relaunch"]\njournal_unit = "vllm"\n')
    assert main(["attach", "--config", str(config), "--log-file", "/var/log/vllm.log"]) == 2
    err = capsys.readouterr().err
    assert "restart_template uses neither of {vllm_argv}, {env}" in err
    assert "log_file and journal_unit: choose one log source" in err
