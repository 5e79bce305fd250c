"""The supervisor runs a real child (the simulated vLLM executable): logs, restarts, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil

from agent.agent import Agent
from agent.lifecycle import LifecycleState
from agent.logsources import LogFanout
from agent.supervisor import ProcessSupervisor
from agent.vllm_args import parse
from tests.agent.conftest import make_config
from tests.agent.test_supervisor_support import (
    SERVING,
    Recorder,
    busy_scenario,
    sim_command,
    sim_env,
    supervisor,
    until_metric,
)
from tests.ports import free_port

RUNNING = "vllm:num_requests_running"


async def test_it_starts_vllm_and_hands_its_lines_to_subscribers() -> None:
    sup = supervisor(free_port())
    seen = Recorder(sup.logs)
    try:
        await sup.start()
        pid = sup.pid
        assert pid is not None and psutil.Process(pid).is_running()
        assert os.getpgid(pid) == pid  # its own process group: a stop reaches all of vLLM
        await seen.wait_for(SERVING)
    finally:
        await sup.close()

    texts = seen.texts()
    assert texts[0].startswith(f"sentinel-agent: vLLM process {pid} started: {sys.executable}")
    assert seen.index("vLLM server version 0.24.0") < seen.index(SERVING)
    assert {line.stream for line in seen.lines} == {"agent", "stdout"}


async def test_it_restarts_with_changed_arguments_that_the_new_process_runs(
    tmp_path: Path,
) -> None:
    port = free_port()
    sup = supervisor(port, env=sim_env(busy_scenario(tmp_path)))
    seen = Recorder(sup.logs)
    try:
        await sup.start()
        first = sup.pid
        await until_metric(port, RUNNING, lambda running: running > 64)

        result = await sup.restart(args={"max_num_seqs": 64})

        second = sup.pid
        assert result == {"pid_before": first, "pid": second, "argv": sup.command.argv()}
        assert second is not None and second != first
        cmdline = psutil.Process(second).cmdline()
        assert cmdline[cmdline.index("--max-num-seqs") + 1] == "64"
        assert sup.command.args["max_num_seqs"] == 64
        # Under the same load the new engine runs 64 at most, and the rest waits.
        await until_metric(port, RUNNING, lambda running: running == 64)
        await until_metric(port, "vllm:num_requests_waiting", lambda waiting: waiting > 0)
        assert await until_metric(port, RUNNING, lambda running: True) <= 64
    finally:
        await sup.close()
    assert seen.index(f"vLLM process {first} exited with code 0 (stopped by the agent)") < (
        seen.index(f"vLLM process {second} started")
    )


async def test_it_reports_a_crash_when_the_child_is_killed() -> None:
    sup = supervisor(free_port())
    seen = Recorder(sup.logs)
    exits = []
    sup.on_exit(exits.append)
    try:
        await sup.start()
        pid = sup.pid
        assert pid is not None
        await seen.wait_for("vLLM server version")
        os.kill(pid, signal.SIGKILL)
        await seen.wait_for("exited with code")
    finally:
        await sup.close()
    assert seen.texts()[-1] == f"sentinel-agent: vLLM process {pid} exited with code -9 (SIGKILL)"
    assert [(e.pid, e.returncode, e.expected) for e in exits] == [(pid, -9, False)]
    assert sup.pid is None and sup.last_exit == exits[0]


async def test_it_reports_the_exit_that_follows_an_engine_death(tmp_path: Path) -> None:
    death = '\n[[effects]]\nkind = "engine_death"\nat_s = 1\ncause = "illegal_memory_access"\n'
    sup = supervisor(free_port(), env=sim_env(busy_scenario(tmp_path, 2.0, death)))
    seen = Recorder(sup.logs)
    try:
        await sup.start()
        pid = sup.pid
        await seen.wait_for("exited with code")
    finally:
        await sup.close()
    assert seen.index("CUDA error: an illegal memory access") < seen.index("EngineDeadError")
    assert seen.index("terminating server process") < seen.index("exited with code")
    assert seen.texts()[-1] == f"sentinel-agent: vLLM process {pid} exited with code 1"


async def test_it_stops_gracefully_and_leaves_no_process_behind() -> None:
    sup = supervisor(free_port())
    seen = Recorder(sup.logs)
    await sup.start()
    pid = sup.pid
    await seen.wait_for(SERVING)

    exit = await sup.stop()

    assert exit is not None and (exit.returncode, exit.expected) == (0, True)
    shutdown = seen.index("[shutdown] API server: shutdown triggered")
    assert shutdown < seen.index("Finished server process") < seen.index("exited with code 0")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    await sup.close()


async def test_it_kills_a_vllm_that_ignores_sigterm() -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring ' + 'SIGTERM', flush=True); time.sleep(60)"
    )
    sup = ProcessSupervisor(
        parse([sys.executable, "-c", stubborn, "serve", "model"]), logs=LogFanout()
    )
    seen = Recorder(sup.logs)
    await sup.start()
    await seen.wait_for("ignoring SIGTERM")

    exit = await sup.stop(timeout_s=0.3)

    assert exit is not None and (exit.returncode, exit.expected) == (-9, True)
    assert seen.count("still runs after 0.3 s: SIGKILL") == 1
    await sup.close()


async def test_it_restarts_after_an_unexpected_exit_when_the_policy_says_so() -> None:
    sup = supervisor(free_port(), on_failure=True, delay_s=0.05)
    seen = Recorder(sup.logs)
    try:
        await sup.start()
        first = sup.pid
        assert first is not None
        await seen.wait_for("vLLM server version")
        os.kill(first, signal.SIGKILL)
        await seen.wait_for("started", times=2)
        assert sup.pid not in (None, first)
    finally:
        await sup.close()
    assert seen.count("restarting vLLM after an unexpected exit (restart policy)") == 1
    assert seen.count("stopped by the agent)") == 1  # close() stops the second one


async def test_it_restarts_with_changed_environment_and_keeps_the_token_private(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("SENTINEL_AGENT_TOKEN", "never-for-vllm")
    sup = supervisor(free_port())
    seen = Recorder(sup.logs)
    try:
        await sup.start()
        await sup.restart(env={"NCCL_P2P_DISABLE": "1", "SENTINEL_SIM_SEED": None})
        await seen.wait_for("vLLM server version")
        assert sup.pid is not None
        environ = psutil.Process(sup.pid).environ()
    finally:
        await sup.close()
    assert environ["NCCL_P2P_DISABLE"] == "1"
    assert "SENTINEL_SIM_SEED" not in environ and "SENTINEL_AGENT_TOKEN" not in environ


async def test_it_gives_checkpoints_the_mode_the_engine_args_and_the_child_pid(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("SENTINEL_SIM_SPEED", "20")
    port = free_port()
    command = sim_command(port, "--max-num-seqs", "32").argv()
    agent = Agent(make_config(f"http://127.0.0.1:{port}", vllm_command=command))
    try:
        await agent.start()
        starting = await agent.collect()
        assert agent.vllm.pid is not None
        # Known from the start: the pid is the child's, before vLLM listens.
        assert starting.process is not None and starting.process.pid == agent.vllm.pid
        assert starting.lifecycle_state is LifecycleState.INITIALIZING
        assert starting.mode == "supervise"
        assert starting.engine_args == {"host": "127.0.0.1", "port": port, "max_num_seqs": 32}
        await until_metric(port, RUNNING, lambda running: True)
        serving = await agent.collect()
        assert serving.lifecycle_state is LifecycleState.SERVING
    finally:
        await agent.close()
    assert agent.vllm.pid is None


async def test_it_hands_lines_to_async_readers_and_survives_a_failing_subscriber() -> None:
    logs = LogFanout()

    def broken(line: object) -> None:
        raise RuntimeError("a subscriber bug")

    logs.subscribe(broken)
    reader = logs.lines()
    first = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0)  # the reader subscribes when it first runs
    logs.say("one")
    logs.say("two")
    assert (await first).text == "sentinel-agent: one"
    assert (await anext(reader)).text == "sentinel-agent: two"
    await reader.aclose()
    logs.say("three")  # no reader left: nothing queues up
    assert [line.text for line in logs.recent][-1] == "sentinel-agent: three"
