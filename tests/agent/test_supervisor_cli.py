"""`sentinel-agent run -- vllm ...`: the agent runs vLLM, serves checkpoints, stops both."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp
import psutil

from agent.checkpoint import decode
from agent.main import TOKEN_ENV, main
from tests.agent.test_supervisor_support import sim_command, until
from tests.ports import free_port

SECRET = "supervise-cli-token-never-logged"


async def test_it_runs_vllm_serves_checkpoints_and_stops_vllm_with_itself() -> None:
    port = free_port()
    vllm = sim_command(port, "--max-num-seqs", "48").argv()
    agent_args = ["run", "--host-name", "gpu-09", "--listen-port", "0", "--gpu-backend", "none"]
    env = {**os.environ, TOKEN_ENV: SECRET, "SENTINEL_SIM_SPEED": "20"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.main", *agent_args, "--", *vllm,
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        agent_port = await asyncio.wait_for(_listening_port(proc.stderr), 30)
        cp = await _checkpoint(agent_port)
        assert (cp.host, cp.mode) == ("gpu-09", "supervise")
        assert cp.engine_args["max_num_seqs"] == 48 and cp.process is not None
        child = psutil.Process(cp.process.pid)
        assert child.ppid() == proc.pid and "simulator.vllm_process" in child.cmdline()
        # The URL follows the command line's --port: the agent scrapes the vLLM it runs.
        for _ in range(100):
            if (await _checkpoint(agent_port)).vllm is not None:
                break
            await asyncio.sleep(0.05)
        assert (await _checkpoint(agent_port)).vllm.url == f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        returncode = await proc.wait()
    assert returncode == 0 and SECRET not in rest
    await until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)


def test_it_needs_the_vllm_command_after_the_separator(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["run", "--gpu-backend", "none"]) == 2
    assert "run needs the vLLM command after --" in capsys.readouterr().err


def test_it_refuses_attach_settings_in_supervise_mode(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(TOKEN_ENV, SECRET)
    argv = ["run", "--log-file", "/var/log/vllm.log", "--", "vllm", "serve", "m"]
    assert main(argv) == 2
    assert "log_file is for attach mode" in capsys.readouterr().err


async def _listening_port(stderr: asyncio.StreamReader) -> int:
    lines = []
    while line := (await stderr.readline()).decode():
        lines.append(line)
        if found := re.search(r"\(supervise mode\) serving on 127\.0\.0\.1:(\d+)", line):
            return int(found.group(1))
    raise AssertionError("the agent exited before listening:\n" + "".join(lines))


async def _checkpoint(port: int):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {SECRET}"}
    url = f"http://127.0.0.1:{port}/v1/checkpoint"
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200
        return decode(await resp.read())
