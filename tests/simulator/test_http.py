"""The simulated servers over loopback HTTP, as the agent and the control plane see them."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from simulator.engine import Phase
from simulator.fleet import Fleet, FleetConfig, run_fleet
from tests.simulator.support import EPOCH, samples, total, value

DEV_SCENARIO = """
[host]
dev_mode = true
startup_scale = 0.1

[engine_args]
enable_sleep_mode = true
"""


@asynccontextmanager
async def fleet_of(scenario: str = "healthy", **config: object) -> AsyncIterator[Fleet]:
    settings = {"hosts": 1, "seed": 1, "speed": 0, "with_agents": False, "epoch": EPOCH, **config}
    async with run_fleet(FleetConfig(scenarios=[scenario], **settings)) as fleet:  # type: ignore[arg-type]
        yield fleet


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with session.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_it_refuses_connections_until_startup_completes() -> None:
    async with fleet_of() as fleet, aiohttp.ClientSession() as session:
        url = fleet.manifest["hosts"][0]["vllm_url"]
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(session, url + "/health")
        await fleet.advance(10)
        assert await get(session, url + "/health") == (200, "", "")  # FastAPI's bare Response
        status, content_type, body = await get(session, url + "/metrics")
        assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
        assert "vllm:num_requests_running{" in body


async def test_it_serves_vllms_endpoints_and_counts_the_instrumented_ones() -> None:
    async with fleet_of() as fleet, aiohttp.ClientSession() as session:
        url = fleet.manifest["hosts"][0]["vllm_url"]
        await fleet.advance(10)
        for path in ("/ping", "/version", "/load", "/metrics/", "/v1/models", "/v1/models"):
            assert (await get(session, url + path))[0] == 200
        async with session.get(url + "/v1/models") as resp:
            models = await resp.json()
        assert models["data"][0]["id"] == "meta-llama/Llama-3.1-8B-Instruct"
        assert models["data"][0]["max_model_len"] == 32768
        async with session.get(url + "/version") as resp:
            assert await resp.json() == {"version": "0.24.0"}
        assert await get(session, url + "/nope") == (
            404,
            "application/json; charset=utf-8",
            '{"detail": "Not Found"}',
        )
        assert (await get(session, url + "/sleep"))[0] == 404  # no dev mode on this host
        text = (await get(session, url + "/metrics"))[2]
        labels = {"handler": "/v1/models", "method": "GET", "status": "2xx"}
        assert value(samples(text), "http_requests_total", **labels) == 3
        assert not [
            k for k in samples(text) if dict(k[1]).get("handler") in ("/metrics", "/health")
        ]


async def test_it_answers_503_after_an_engine_death_then_goes_away() -> None:
    async with fleet_of("memory_leak_oom") as fleet, aiohttp.ClientSession() as session:
        url = fleet.manifest["hosts"][0]["vllm_url"]
        sim = fleet.hosts[0].sim
        while sim.phase is not Phase.DEAD:
            await fleet.advance(5)
        assert (await get(session, url + "/health"))[0] == 503
        assert (await get(session, url + "/metrics"))[0] == 200
        await fleet.advance(6)
        with pytest.raises(aiohttp.ClientError):  # the kept-alive connection is gone too
            await get(session, url + "/health")
        await fleet.advance(30)  # restarted 20 s after the death
        assert (await get(session, url + "/health"))[0] == 200


async def test_it_answers_health_200_while_the_engine_hangs() -> None:
    async with fleet_of("nccl_hang") as fleet, aiohttp.ClientSession() as session:
        url = fleet.manifest["hosts"][0]["vllm_url"]
        await fleet.advance(110)  # hung since 90 s of uptime
        first = samples((await get(session, url + "/metrics"))[2])
        await fleet.advance(30)
        second = samples((await get(session, url + "/metrics"))[2])
        assert (await get(session, url + "/health"))[0] == 200
        assert total(second, "vllm:num_requests_running") > 0
        tokens = "vllm:generation_tokens_total"
        assert total(second, tokens) == total(first, tokens) > 0


async def test_it_offers_the_dev_endpoints_in_dev_mode(tmp_path: Path) -> None:
    scenario = tmp_path / "dev.toml"
    scenario.write_text(DEV_SCENARIO)
    async with fleet_of(str(scenario)) as fleet, aiohttp.ClientSession() as session:
        url = fleet.manifest["hosts"][0]["vllm_url"]
        assert fleet.manifest["hosts"][0]["dev_mode"] is True
        await fleet.advance(30)
        async with session.post(url + "/sleep?level=1") as resp:
            assert resp.status == 200
        assert (await get(session, url + "/is_sleeping"))[2] == '{"is_sleeping": true}'
        sleeping = samples((await get(session, url + "/metrics"))[2])
        assert value(sleeping, "vllm:engine_sleep_state", sleep_state="weights_offloaded") == 1
        assert fleet.hosts[0].sim.gpus[0].memory_used_bytes < 3 * 1024**3
        async with session.post(url + "/wake_up") as resp:
            assert resp.status == 200
        async with session.post(url + "/pause?mode=keep") as resp:
            assert await resp.json() == {"status": "paused"}
        assert (await get(session, url + "/is_paused"))[2] == '{"is_paused": true}'
        async with session.post(url + "/resume") as resp:
            assert await resp.json() == {"status": "resumed"}
        async with session.post(url + "/reset_prefix_cache") as resp:
            assert resp.status == 200
        async with session.get(url + "/server_info") as resp:
            info = await resp.json()
        assert info["vllm_config"]["max_num_seqs"] == 1024
        assert info["vllm_env"]["VLLM_SERVER_DEV_MODE"] == "1"


def free_port_pair() -> int:
    """Return a port P such that P and P + 1 are both free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


async def test_it_uses_fixed_ports_from_a_base_port() -> None:
    base = free_port_pair()
    async with fleet_of(base_port=base, with_agents=True) as fleet:
        host = fleet.manifest["hosts"][0]
        assert host["vllm_url"] == f"http://127.0.0.1:{base}"
        assert host["agent_url"] == f"http://127.0.0.1:{base + 1}"
