"""Supervise mode validates before it starts vLLM, and a failed check can block the start."""

from __future__ import annotations

from agent.agent import Agent
from agent.lifecycle import LifecycleState
from tests.agent.conftest import make_config
from tests.agent.test_supervisor_support import sim_command
from tests.ports import free_port


async def test_it_refuses_to_start_vllm_when_a_check_fails_and_says_why() -> None:
    port = free_port()
    # A vLLM command whose executable does not exist: the vllm_command check fails.
    command = [
        "/nonexistent/vllm",
        "serve",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--port",
        str(port),
    ]
    agent = Agent(
        make_config(f"http://127.0.0.1:{port}", vllm_command=command, block_on_failed_check=True)
    )
    try:
        await agent.start()
        cp = await agent.collect()
    finally:
        await agent.close()

    assert agent.vllm.pid is None  # never started
    (report,) = cp.validations
    assert report.trigger == "startup" and report.blocked
    assert "vllm_command" in [c.name for c in report.checks if c.status == "fail"]
    assert cp.lifecycle_state is LifecycleState.FAILED_CONFIG
    assert cp.lifecycle_detail.startswith("vLLM not started: pre-startup checks failed: ")
    assert [t.to_state for t in cp.transitions][:2] == [
        LifecycleState.PRE_STARTUP,
        LifecycleState.FAILED_CONFIG,
    ]


async def test_it_validates_then_starts_vllm_when_nothing_blocks() -> None:
    port = free_port()
    agent = Agent(make_config(f"http://127.0.0.1:{port}", vllm_command=sim_command(port).argv()))
    try:
        await agent.start()
        cp = await agent.collect()
        assert agent.vllm.pid is not None
    finally:
        await agent.close()

    (report,) = cp.validations
    assert report.trigger == "startup" and not report.blocked
    assert cp.transitions[0].to_state is LifecycleState.PRE_STARTUP
