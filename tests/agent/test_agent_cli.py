"""`sentinel-agent`: refuses to start without a token, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp

from agent.checkpoint import decode
from agent.config import AgentConfig
from agent.main import TOKEN_ENV, main

SECRET = "cli-test-token-which-must-never-be-logged"


def test_it_refuses_to_start_without_a_token(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["--gpu-backend", "none"]) == 2
    assert f"no token: pass --token-file or set {TOKEN_ENV}" in capsys.readouterr().err


def test_it_refuses_an_empty_token_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    assert main(["--token-file", str(token_file)]) == 2
    assert f"--token-file {token_file} is empty" in capsys.readouterr().err


def test_it_refuses_a_bad_setting_with_the_reason(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(TOKEN_ENV, SECRET)
    assert main(["--vllm-url", "localhost:8000", "--gpu-backend", "none"]) == 2
    err = capsys.readouterr().err
    assert "is not an http(s) URL" in err and SECRET not in err


async def test_it_serves_checkpoints_until_terminated(tmp_path: Path, fake_vllm) -> None:  # type: ignore[no-untyped-def]
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    args = ["--host-name", "gpu-07", "--token-file", str(token_file), "--listen-port", "0"]
    args += ["--vllm-url", fake_vllm.url, "--gpu-backend", "none", "--log-level", "DEBUG"]
    args += ["--disk", str(tmp_path)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from agent.main import main; sys.exit(main(sys.argv[1:]))",
        *args,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        head, port = await asyncio.wait_for(_until_listening(proc.stderr), 30)
        url = f"http://127.0.0.1:{port}/v1/checkpoint"
        headers = {"Authorization": f"Bearer {SECRET}"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            assert resp.status == 200
            cp = decode(await resp.read())
        assert (cp.host, cp.gpu_backend) == ("gpu-07", "none")
        assert cp.vllm is not None and cp.vllm.requests_running == 96
        # The machine: its memory, and the one filesystem asked for instead of the defaults.
        assert cp.system is not None and [d.path for d in cp.system.disks] == [str(tmp_path)]
        assert 0 < (cp.system.memory_available_bytes or 0) <= (cp.system.memory_total_bytes or 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        returncode = await proc.wait()

    assert returncode == 0
    assert SECRET not in head + rest


async def _until_listening(stderr: asyncio.StreamReader) -> tuple[str, int]:
    """Return the log up to the line naming the bound port, and that port."""
    lines = []
    while line := (await stderr.readline()).decode():
        lines.append(line)
        found = re.search(r" on 127\.0\.0\.1:(\d+)", line)
        if found:
            return "".join(lines), int(found.group(1))
    raise AssertionError("the agent exited before listening:\n" + "".join(lines))


def test_it_refuses_the_simulated_backend_without_the_simulator(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(TOKEN_ENV, SECRET)
    monkeypatch.setitem(sys.modules, "simulator.nvml", None)  # as if not installed
    assert main(["--gpu-backend", "simulated"]) == 2
    assert "--gpu-backend simulated needs the simulator package" in capsys.readouterr().err


def test_it_keeps_the_token_out_of_the_config_repr() -> None:
    config = AgentConfig(host_name="gpu-01", token=SECRET, gpu_backend="none")
    assert SECRET not in repr(config) and "gpu-01" in repr(config)
