from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from agent.checkpoint import decode, encode
from monitor import ingest, polling
from monitor.models import Checkpoint, Host, IngestError
from tests.factories import make_checkpoint

pytestmark = pytest.mark.django_db


def _host(name: str) -> Host:
    return Host.objects.create(name=name, agent_url="http://127.0.0.1:1", agent_token="t")


def _result(host: Host, **changes) -> polling.PollResult:  # type: ignore[no-untyped-def]
    target = polling.PollTarget(host_id=host.pk, name=host.name, url=host.agent_url, token="t")
    cp = decode(encode(make_checkpoint(host=host.name, **changes)))
    return polling.PollResult(target=target, elapsed_s=0.01, checkpoint=cp)


def _store(hosts: list[Host], results: list[polling.PollResult]) -> ingest.StoreReport:
    return ingest.store_poll_results({h.pk: h for h in hosts}, results, timezone.now())


def test_it_stores_text_with_nul_characters_that_jsonb_refuses() -> None:
    host = _host("gpu-01")
    _store([host], [_result(host, lifecycle_detail="bad\x00byte")])
    assert Checkpoint.objects.get().data["lifecycle_detail"] == "bad\ufffdbyte"


def test_it_stores_the_rest_of_a_batch_when_the_database_refuses_one_row() -> None:
    hosts = [_host(f"gpu-0{i}") for i in range(1, 4)]
    with connection.cursor() as cursor:
        # A real refusal from PostgreSQL, for one row only.
        cursor.execute(
            "CREATE FUNCTION refuse_gpu02() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.host_id = {hosts[1].pk} THEN RAISE EXCEPTION 'row refused for the test'; "
            "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON monitor_checkpoint "
            "FOR EACH ROW EXECUTE FUNCTION refuse_gpu02()"
        )

    report = _store(hosts, [_result(h) for h in hosts])

    stored = set(Checkpoint.objects.values_list("host__name", flat=True))
    assert stored == {"gpu-01", "gpu-03"}
    error = IngestError.objects.get()
    assert error.host.name == "gpu-02"
    assert "row refused for the test" in error.message
    assert '"host":"gpu-02"' in error.payload_excerpt
    assert Host.objects.get(name="gpu-02").status == Host.Status.DEGRADED
    assert len(report.stored) == 3


def test_it_ignores_a_host_deleted_while_its_poll_was_in_flight() -> None:
    kept, deleted = _host("gpu-01"), _host("gpu-02")
    results = [_result(kept), _result(deleted)]
    Host.objects.filter(pk=deleted.pk).delete()

    _store([kept, deleted], results)

    assert list(Checkpoint.objects.values_list("host__name", flat=True)) == ["gpu-01"]


def test_it_keeps_its_own_time_for_an_agent_clock_running_ahead() -> None:
    host = _host("gpu-01")
    ahead = (timezone.now() + timedelta(hours=3)).timestamp()

    _store([host], [_result(host, collected_at=ahead)])

    row = Checkpoint.objects.get()
    assert abs((row.collected_at - row.received_at).total_seconds()) < 1


def test_it_records_a_nul_laden_garbage_payload_without_losing_the_batch() -> None:
    good, bad = _host("gpu-01"), _host("gpu-02")
    target = polling.PollTarget(host_id=bad.pk, name=bad.name, url=bad.agent_url, token="t")
    garbage = polling.PollResult(
        target=target,
        elapsed_s=0.01,
        payload=b"\x00\x00binary\x00",
        error_kind="invalid_payload",
        error="invalid checkpoint: JSON is malformed: invalid character (byte 0)",
    )

    _store([good, bad], [_result(good), garbage])

    assert list(Checkpoint.objects.values_list("host__name", flat=True)) == ["gpu-01"]
    assert IngestError.objects.get(host=bad).payload_excerpt == "\ufffd\ufffdbinary\ufffd"
