from __future__ import annotations

import dataclasses
import time

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from agent.checkpoint import decode, encode, replace
from monitor import ingest, polling
from monitor.models import Checkpoint, Host, LearnedModel
from tests.factories import GIB, make_checkpoint

pytestmark = pytest.mark.django_db


def _store(host: Host, **changes) -> None:  # type: ignore[no-untyped-def]
    target = polling.PollTarget(host_id=host.pk, name=host.name, url=host.agent_url, token="t")
    cp = decode(encode(make_checkpoint(host=host.name, **changes)))
    result = polling.PollResult(target=target, elapsed_s=0.01, checkpoint=cp)
    ingest.store_poll_results({host.pk: host}, [result], timezone.now())


@pytest.fixture
def host() -> Host:
    return Host.objects.create(
        name="gpu-01",
        agent_url="http://127.0.0.1:1",
        agent_token="t",
        model_name="meta-llama/Llama-3.1-8B-Instruct",
    )


@pytest.mark.parametrize("name", ["fleet", "host_detail", "host_series"])
def test_it_sends_anonymous_users_to_the_login_page(client, host, name) -> None:  # type: ignore[no-untyped-def]
    url = reverse(name) if name == "fleet" else reverse(name, args=[host.name])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_lists_every_host_with_its_figures(client, alice, host) -> None:  # type: ignore[no-untyped-def]
    _store(host, kv_cache_usage_pct=64.5, requests_running=31.0, requests_waiting=4.0)
    Host.objects.create(name="gpu-02", agent_url="http://127.0.0.1:2", agent_token="t")
    client.force_login(alice)

    html = client.get(reverse("fleet")).content.decode()

    assert 'ws-connect="/ws/fleet/"' in html
    assert f'id="host-{host.pk}"' in html
    assert "64.5%" in html
    assert "31 / 4" in html
    assert "gpu-02" in html
    assert "74.0 / 80 GB" in html


def test_it_shows_the_host_page_with_its_transitions(client, alice, host) -> None:  # type: ignore[no-untyped-def]
    _store(host)
    client.force_login(alice)

    html = client.get(reverse("host_detail", args=[host.name])).content.decode()

    assert "plotly-basic-4.1.1.min.js" in html
    assert f'data-host-id="{host.pk}"' in html
    assert "unknown → <strong>serving</strong>" in html


def test_it_serves_chart_series_oldest_first(client, alice, host) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    for i, kv in enumerate([10.0, 20.0, 30.0]):
        _store(host, collected_at=now - 30 + i * 10, kv_cache_usage_pct=kv)
    client.force_login(alice)

    data = client.get(reverse("host_series", args=[host.name]), {"window": "5m"}).json()

    assert data["kv_cache_usage_pct"] == [10.0, 20.0, 30.0]
    assert data["t"] == sorted(data["t"])
    assert data["gpu_mem_total_gb"] == [80.0, 80.0, 80.0]
    assert data["window"] == "5m"


def test_it_thins_long_windows_but_keeps_the_newest_point(client, alice, host, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from monitor import series

    monkeypatch.setattr(series, "MAX_POINTS", 10)
    now = time.time()
    for i in range(35):
        _store(host, collected_at=now - 350 + i * 10, kv_cache_usage_pct=float(i))
    client.force_login(alice)

    data = client.get(reverse("host_series", args=[host.name]), {"window": "15m"}).json()

    assert Checkpoint.objects.count() == 35
    assert len(data["t"]) <= 10
    assert data["kv_cache_usage_pct"][-1] == 34.0


def test_it_falls_back_to_the_default_window_for_an_unknown_one(client, alice, host) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    data = client.get(reverse("host_series", args=[host.name]), {"window": "1y"}).json()
    assert data["window"] == "15m"


def test_it_answers_404_for_an_unknown_host(client, alice) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    assert client.get(reverse("host_detail", args=["nope"])).status_code == 404


def test_it_shows_errors_gpu_events_and_the_latest_validation_on_the_host_page(
    client, alice, host
) -> None:  # type: ignore[no-untyped-def]
    from agent.checkpoint import ErrorEvent, GpuEvent, ValidationCheck, ValidationReport

    now = time.time()
    _store(
        host,
        collected_at=now - 600,
        event_seq=3,
        errors=[
            ErrorEvent(
                id=1,
                category="cuda_oom",
                count=2,
                first_seen_at=now,
                message="torch.OutOfMemoryError: CUDA out of memory.",
                traceback="Traceback (most recent call last):\n  File ...",
            )
        ],
        gpu_events=[
            GpuEvent(
                id=2,
                at=now,
                gpu_index=0,
                kind="xid",
                xid=48,
                severity="critical",
                message="Double Bit ECC Error",
                action="Reset the GPU",
            )
        ],
        validations=[
            ValidationReport(
                id=3,
                at=now,
                trigger="on_demand",
                blocked=False,
                checks=[
                    ValidationCheck(
                        name="shm_size",
                        status="warn",
                        message="/dev/shm is 64 MiB",
                        fix="Run the container with --shm-size=16g",
                    ),
                ],
            )
        ],
    )
    client.force_login(alice)

    html = client.get(reverse("host_detail", args=[host.name])).content.decode()

    assert 'id="host-events"' in html
    assert "cuda_oom" in html and "\u00d72" in html and "Traceback (most recent call last)" in html
    assert "Xid 48" in html and "Double Bit ECC Error" in html and "Reset the GPU" in html
    assert "/dev/shm is 64 MiB" in html and "--shm-size=16g" in html
    assert 'class="seg tone-ok"' in html  # serving since the first poll


def test_it_shows_the_figures_vllm_logged_at_its_last_start(client, alice, host) -> None:  # type: ignore[no-untyped-def]
    from agent.checkpoint import Startup

    _store(
        host,
        startup=Startup(
            model_weights_gib=14.99,
            weights_load_s=8.2,
            kv_cache_gib=54.4,
            kv_cache_tokens=445632,
            max_concurrency=13.6,
            max_concurrency_tokens=32768,
            init_engine_s=41.5,
        ),
    )
    client.force_login(alice)

    html = client.get(reverse("host_detail", args=[host.name])).content.decode()

    assert "weights 14.99 GiB in 8.2 s" in html
    assert "KV cache 54.40 GiB = 445632 tokens" in html
    assert "max concurrency 13.60\u00d7 at 32768 tokens" in html
    assert "engine ready in 41.5 s" in html


def test_it_shows_the_machines_memory_and_disks(client, alice, host) -> None:  # type: ignore[no-untyped-def]
    from agent.checkpoint import Disk, System

    gb = 1024.0**3  # the pages' GB (monitor.summary.GB)
    disks = [
        Disk(path="/", total_bytes=1000 * gb, used_bytes=940 * gb, free_bytes=60 * gb),
        Disk(path="/dev/shm", total_bytes=32 * gb, used_bytes=gb, free_bytes=31 * gb),
    ]
    machine = System(memory_total_bytes=64 * gb, memory_available_bytes=40 * gb, disks=disks)
    _store(host, system=machine)
    client.force_login(alice)

    html = client.get(reverse("host_detail", args=[host.name])).content.decode()

    assert "RAM 40.0 of 64.0 GB available" in html
    assert "/ 60.0 GB free of 1000.0 GB (94 % used)" in html
    assert "/dev/shm 31.0 GB free of 32.0 GB (3 % used)" in html


@pytest.mark.parametrize(
    ("card", "shown"),
    [
        ({"provenance": "simulator scenarios a, b", "trained_on": "simulator history (cold start)"},
         "trained on simulator history (cold start)"),
        ({"provenance": "this fleet's last 7 days"}, "trained on this fleet's last 7 days"),
    ],
)  # fmt: skip
def test_the_predictions_panel_says_what_the_active_model_was_trained_on(  # type: ignore[no-untyped-def]
    client, alice, host, card, shown
) -> None:
    LearnedModel.objects.create(
        kind="patterns", version=3, model_format=1, library_version="1.5",
        created_at=timezone.now(), card=card, blob=b"", active=True,
    )  # fmt: skip
    _store(host)
    client.force_login(alice)

    html = client.get(reverse("host_detail", args=[host.name])).content.decode()

    assert f"pattern model v3, {escape(shown)}" in html


def test_a_host_of_several_gpus_shows_its_fullest_gpu_and_tells_the_charts_its_count(  # type: ignore[no-untyped-def]
    client, alice, host
) -> None:
    client.force_login(alice)
    page = reverse("host_detail", args=[host.name])
    assert 'data-gpu-count="1"' in client.get(page).content.decode()  # nothing polled yet

    one = make_checkpoint(host=host.name)
    gpus = [dataclasses.replace(one.gpus[0], index=i, memory_used_bytes=used)
            for i, used in enumerate([79.2 * GIB, 72 * GIB, 72 * GIB, 72 * GIB])]  # fmt: skip
    gpus[2] = dataclasses.replace(gpus[2], temperature_c=91.0,
                                  throttle_reasons=["gpu_idle", "hw_thermal_slowdown"])  # fmt: skip
    target = polling.PollTarget(host_id=host.pk, name=host.name, url=host.agent_url, token="t")
    result = polling.PollResult(target=target, elapsed_s=0.01, checkpoint=replace(one, gpus=gpus))
    ingest.store_poll_results({host.pk: host}, [result], timezone.now())

    assert "295.2 / 320 GB (fullest GPU 99%)" in client.get(reverse("fleet")).content.decode()
    html = client.get(page).content.decode()
    assert 'data-gpu-count="4"' in html
    # And each GPU's figures, the full one first.
    figures = " ".join(html.split('id="gpu-figures">')[1].split("</p>")[0].split())
    assert figures.startswith("GPUs: 0: 79.2 / 80 GB,") and figures.count(" · ") == 3
    assert "2: 72.0 / 80 GB, 91 °C" in figures and "slowed: hw_thermal_slowdown" in figures
    assert "gpu_idle" not in figures
